# The agent image: `docker build -t prepull-agent .` (buildx for linux/amd64,linux/arm64: the
# wheels it installs exist for both, nothing here is architecture-specific).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# Non-root by default (lock, resolve); the DaemonSet runs it as uid 0 with every capability
# dropped, because the containerd socket is root:root 0660.
USER 65532:65532
ENTRYPOINT ["prepull-agent"]
CMD ["run", "--config=/etc/prepull/preload.yaml"]
