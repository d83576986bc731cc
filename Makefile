# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
VENV := .venv
BIN := $(VENV)/bin
# containerd runs as root; when make is not root, the commands that start it use sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# containerd release lines the integration suite runs on: 1.6 (Debian bookworm, the system
# package), 1.7 (trixie) and 2 (unstable), the last two fetched into .cache/ by `make deps`.
LINES := 1.6 1.7 2
# The line `make demo` and `make bench` use: `make demo CONTAINERD=2`.
CONTAINERD ?= 1.6

.PHONY: deps demo test check lint typecheck unit proto deploy image bench $(addprefix test-,$(LINES))

deps:
	@scripts/install-deps.sh

demo: deps
	$(SUDO) env PREPULL_CONTAINERD=$(CONTAINERD) $(BIN)/python -m demo

# All tests: lint, types, unit tests, then the integration suite (real containerd, registry,
# Prometheus, pods, an arm64 node) once per containerd line. Every line runs; any failure fails.
test: deps check
	$(SUDO) $(BIN)/python -m pytest tests/unit
	@failed=""; for line in $(LINES); do \
	  echo "== integration tests on containerd $$line"; \
	  $(SUDO) env PREPULL_CONTAINERD=$$line $(BIN)/python -m pytest tests/integration || failed="$$failed $$line"; \
	done; \
	if [ -n "$$failed" ]; then echo "integration tests FAILED on containerd:$$failed"; exit 1; fi

# One line only, e.g. `make test-1.7`.
$(addprefix test-,$(LINES)): test-%: deps
	$(SUDO) env PREPULL_CONTAINERD=$* $(BIN)/python -m pytest tests/integration

check: lint typecheck

lint: deps
	$(BIN)/ruff check agent tests demo scripts bench
	$(BIN)/ruff format --check agent tests demo scripts bench

typecheck: deps
	$(BIN)/mypy

unit: deps
	$(BIN)/python -m pytest tests/unit

proto: deps
	$(BIN)/python scripts/gen_proto.py

deploy: deps
	$(BIN)/python scripts/render_deploy.py

# The agent's image, offline: IMAGE=registry.example.com/prepull-agent:0.1.0 PUSH=1 pushes it.
image: deps
	$(SUDO) $(BIN)/python scripts/build_image.py --arch $(or $(ARCH),amd64) \
		$(if $(IMAGE),--ref $(IMAGE)) $(if $(PUSH),--push)

bench: deps
	$(SUDO) env PREPULL_CONTAINERD=$(CONTAINERD) $(BIN)/python -m bench
