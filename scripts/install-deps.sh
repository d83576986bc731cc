#!/usr/bin/env bash
# Install what the demo and the tests need on a Debian/Ubuntu machine:
# docker-registry, runc, prometheus, busybox-static and
# qemu-user-static from apt; containerd 1.6, 1.7, 2.x, an arm64 build and kubectl into .cache/
# (never installed: scripts/fetch-containerd.sh); and this package with its test extras in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "prepull-agent needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1))" >&2
  exit 2
fi

apt_packages=()
command -v docker-registry >/dev/null || apt_packages+=(docker-registry)
command -v runc >/dev/null || apt_packages+=(runc)
# prometheus: a real server scrapes the agent in the tests; promtool checks deploy/ rules.
command -v prometheus >/dev/null && command -v promtool >/dev/null || apt_packages+=(prometheus)
# A static busybox makes the test images (and the pods' pause image) really runnable.
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then apt_packages+=(busybox-static); fi
# qemu-aarch64-static runs Debian's arm64 containerd: a real arm64 node for image work.
command -v qemu-aarch64-static >/dev/null || apt_packages+=(qemu-user-static)
# skopeo: `make bench` times a `skopeo inspect` loop against `lock`.
command -v skopeo >/dev/null || apt_packages+=(skopeo)
# systemd-analyze checks deploy/systemd/prepull-agent.service.
command -v systemd-analyze >/dev/null || apt_packages+=(systemd)
# mmdebstrap: `make image` and its test build the agent's image from Debian's packages.
command -v mmdebstrap >/dev/null || apt_packages+=(mmdebstrap)
"$PYTHON" -c 'import ensurepip' 2>/dev/null || apt_packages+=(python3-venv)
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "installing ${apt_packages[*]} from apt"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

scripts/fetch-containerd.sh

# pigz (unpigz) and igzip for the bench's inflate floors, unpacked into .cache/tools and never put
# on the system PATH: containerd inflates with igzip or unpigz when its PATH has them.
tools=.cache/tools
if [ ! -x "$tools/usr/bin/pigz" ] || [ ! -x "$tools/usr/bin/igzip" ]; then
  debs=$(mktemp -d)
  (cd "$debs" && { apt-get download -qq pigz isal libisal2 2>/dev/null ||
    { $SUDO apt-get update -qq && apt-get download -qq pigz isal libisal2; }; })
  mkdir -p "$tools"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$tools"; done
  rm -rf "$debs"
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
