#!/usr/bin/env bash
# Fetch the containerd release lines nodes run, from Debian's own package registry, without
# installing anything over the system's packages:
#   1.6  Debian bookworm's containerd -> .cache/containerd/1.6/usr/bin
#   1.7  Debian trixie's containerd   -> .cache/containerd/1.7/usr/bin
#   2    Debian unstable's containerd -> .cache/containerd/2/usr/bin
#   arm64  bookworm's containerd:arm64 + libc6:arm64 in one sysroot -> .cache/containerd/arm64
#          (run under qemu-aarch64-static -L <sysroot>: a real arm64 node for image work)
# and kubectl, Debian trixie's (1.32, a static binary) -> .cache/kubectl/usr/bin: its built-in
# kustomize renders deploy/, and it checks the readiness gate's stand-in API server. Whatever
# kubectl the machine has (or not) is never used.
# `apt-get download` runs with a private sources list and private lists/cache, so the system's apt
# state is untouched; `dpkg -x` unpacks. A line that cannot be had fails the script (never a skip).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=.cache/containerd
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# The machine's own Debian mirror, from its apt sources (deb822 or one-line format).
mirror=$(grep -hoE 'https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
  grep -v security | head -n1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}

# fetch <dest> <suite> <arch> <packages...>: download and unpack into <dest>.
fetched=0
fetch() {
  local dest=$1 suite=$2 arch=$3
  shift 3
  local stamp="$dest/.fetched-$suite-$arch-$*"
  stamp=${stamp// /_}
  [ -e "$stamp" ] && return 0
  local apt
  apt=$(mktemp -d)
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  echo "deb [arch=$arch signed-by=$KEYRING] $mirror $suite main" >"$apt/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::State::Status=/dev/null
    -o "APT::Architecture=$arch" -o "APT::Architectures=$arch" -o APT::Sandbox::User=root -qq)
  echo "fetching $* into $dest ($suite, $arch) from $mirror"
  apt-get "${opts[@]}" update
  rm -rf "$dest"
  mkdir -p "$dest"
  (cd "$apt" && apt-get "${opts[@]}" download "$@")
  for deb in "$apt"/*.deb; do dpkg -x "$deb" "$dest"; done
  for deb in "$apt"/*.deb; do basename "$deb"; done >"$dest/PACKAGES"
  rm -rf "$apt"
  touch "$stamp"
  fetched=1
}

fetch $CACHE/1.6 bookworm amd64 containerd
fetch $CACHE/1.7 trixie amd64 containerd
fetch $CACHE/2 sid amd64 containerd
fetch $CACHE/arm64 bookworm arm64 containerd libc6
fetch .cache/kubectl trixie amd64 kubectl

# Each line must be what its name says (a suite may move to another release line one day).
# Quiet when nothing was fetched: `make` runs this before every target.
say() { [ "$fetched" = 1 ] && echo "$1" || true; }
for line in 1.6 1.7 2; do
  version=$("$CACHE/$line/usr/bin/containerd" --version)
  say "$version"
  case "$version" in
  *" $line."*) ;;
  *) echo "containerd $line: $CACHE/$line holds another line: $version" >&2 && exit 1 ;;
  esac
done
command -v qemu-aarch64-static >/dev/null
# (qemu's arm64 containerd warns that it cannot read a CPU variant: harmless here.)
say "$(qemu-aarch64-static -L "$CACHE/arm64" "$CACHE/arm64/usr/bin/containerd" --version 2>/dev/null)"
say "$(.cache/kubectl/usr/bin/kubectl version --client)"
