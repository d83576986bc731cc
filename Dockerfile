# The agent image, with the layout `make image` writes offline (scripts/build_image.py; a test
# checks the two agree): Debian bookworm's python3, the project and its dependencies in
# /opt/prepull-agent, the console script /usr/local/bin/prepull-agent, user 65532.
#   docker build --build-arg IMAGE=registry.example.com/prepull-agent:0.1.0 \
#     -t registry.example.com/prepull-agent:0.1.0 .
# (buildx for linux/amd64,linux/arm64: nothing here is architecture-specific.)
# The base is pinned by digest (debian:bookworm-slim's index, from a public BuildKit log: these
# machines cannot reach Docker Hub to check it; refresh with
# `skopeo inspect --raw docker://docker.io/library/debian:bookworm-slim | sha256sum`).
ARG BASE=docker.io/library/debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

FROM ${BASE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
# Compiled now: the pod's root filesystem is read-only, so nothing could be cached there.
RUN pip3 install --no-cache-dir --no-compile --break-system-packages \
        --target /opt/prepull-agent . \
    && rm -rf /opt/prepull-agent/bin \
    && python3 -m compileall -q --invalidation-mode=unchecked-hash /opt/prepull-agent

FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/prepull-agent /opt/prepull-agent
COPY --chmod=0755 scripts/console-script /usr/local/bin/prepull-agent
# What `prepull-agent version` names as its image.
ARG IMAGE=prepull-agent
ENV PATH=/usr/local/bin:/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 PREPULL_IMAGE=${IMAGE}
# Non-root by default (lock, resolve); the DaemonSet runs it as uid 0 with every capability
# dropped, because the containerd socket is root:root 0660 (or give the pod the socket's group
# with runAsGroup/supplementalGroups where the node's socket is group-accessible).
USER 65532:65532
ENTRYPOINT ["prepull-agent"]
CMD ["run", "--config=/etc/prepull/preload.yaml"]
