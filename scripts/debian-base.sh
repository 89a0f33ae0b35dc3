#!/usr/bin/env bash
# Build a local Debian bookworm base image from Debian packages alone (no container registry):
# debootstrap --variant=minbase, then `podman import` (or `docker import`).
#
#   scripts/debian-base.sh [IMAGE]     default IMAGE: longtail-base-debian:bookworm
#
# `make images BASE_IMAGE=localhost/longtail-base-debian:bookworm` then builds the step images on it
# instead of the pinned upstream python image. Skips the work when IMAGE already exists.
set -euo pipefail

IMAGE=${1:-longtail-base-debian:bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ENGINE=${CONTAINER_ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$ENGINE" ] || { echo "debian-base: neither podman nor docker is installed; apt-get install podman" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debian-base: debootstrap is not installed; apt-get install debootstrap" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debian-base: debootstrap needs root; run as root" >&2; exit 1; }

if "$ENGINE" image exists "$IMAGE" 2>/dev/null || "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "debian-base: $IMAGE already exists"
  exit 0
fi

ROOT=$(mktemp -d /var/tmp/longtail-debian-base.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 \
  || { echo "debian-base: debootstrap failed; see $ROOT.log" >&2; exit 1; }
rm -f "$ROOT.log"
# Leave no apt lists or caches in the layer; the step images fetch what they need at build time.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
  "$ROOT"/var/log/bootstrap.log
tar -C "$ROOT" -c . | "$ENGINE" import --quiet --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
echo "debian-base: built $IMAGE"
