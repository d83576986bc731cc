# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
VENV := .venv
BIN := $(VENV)/bin
# containerd runs as root; when make is not root, the commands that start it use sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps demo test check lint typecheck unit proto bench

deps:
	@scripts/install-deps.sh

demo: deps
	$(SUDO) $(BIN)/python -m demo

# All tests, unit and integration (real containerd and docker-registry), plus lint and types.
test: deps check
	$(SUDO) $(BIN)/python -m pytest

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

bench: deps
	$(SUDO) $(BIN)/python -m bench
