#!/usr/bin/env bash
# Build `sdtui-base:offline`: a Debian bookworm base image with python3, this machine's CA
# bundle and CPU torch in a venv on PATH, made without Docker Hub (debootstrap + docker import).
# Usage: scripts/offline-base-image.sh [--force]
set -euo pipefail

IMAGE="${SDTUI_BASE_IMAGE:-sdtui-base:offline}"
ROOTFS_IMAGE="${IMAGE%%:*}:rootfs"
# The worker lock's torch: the base carries exactly the version every image installs.
TORCH_VERSION="$(sed -n 's/^torch==//p' "$(dirname "$0")/../sdtui/container/requirements-worker.lock")"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

image_torch() {
  docker run --rm --entrypoint python3 "$IMAGE" \
    -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null
}
if [[ $FORCE == 0 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  have="$(image_torch || true)"
  if [[ "${have%%+*}" == "$TORCH_VERSION" ]]; then
    echo "$IMAGE already exists with torch $have (use --force to rebuild)"
    exit 0
  fi
  echo "$IMAGE has torch ${have:-none}, the worker lock pins $TORCH_VERSION: rebuilding"
fi

# shellcheck source=scripts/debian-mirror.sh
source "$(dirname "$0")/debian-mirror.sh"

# pip's find-links directory holds the CPU torch wheel; a build sees only its context, so copy it.
torch_wheel() {
  local dirs d
  dirs="$(pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p") ${PIP_FIND_LINKS:-}"
  for d in $dirs; do
    ls "$d"/torch-"$TORCH_VERSION"+cpu-cp311-*"$(uname -m)".whl 2>/dev/null | head -n1 | grep . && return 0
  done
  return 1
}

mirror="$(debian_mirror)" || { echo "no Debian mirror found in /etc/apt/sources.list(.d)" >&2; exit 1; }
wheel="$(torch_wheel)" || { echo "no torch-$TORCH_VERSION CPU wheel in pip's find-links dirs" >&2; exit 1; }
[[ -s "$HOST_CA" ]] || { echo "missing CA bundle $HOST_CA" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "debootstrap bookworm from $mirror ..."
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
# The host bundle trusts whatever TLS-intercepting proxy this machine sits behind.
cp "$HOST_CA" "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

echo "importing $ROOTFS_IMAGE ..."
tar -C "$rootfs" -c . | docker import \
  -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  -c 'ENV LANG=C.UTF-8' \
  -c 'CMD ["python3"]' \
  - "$ROOTFS_IMAGE" >/dev/null

ctx="$work/context"
mkdir -p "$ctx"
cp "$wheel" "$ctx/"
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $ROOTFS_IMAGE
COPY $(basename "$wheel") /tmp/
RUN python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check /tmp/$(basename "$wheel") \\
 && rm /tmp/$(basename "$wheel") \\
 && /opt/venv/bin/python -c "import torch; print('torch', torch.__version__)"
ENV PATH=/opt/venv/bin:\$PATH VIRTUAL_ENV=/opt/venv
DOCKERFILE

echo "building $IMAGE (CPU torch $TORCH_VERSION in /opt/venv) ..."
docker build -q -t "$IMAGE" "$ctx" >/dev/null
docker image rm "$ROOTFS_IMAGE" >/dev/null 2>&1 || true
echo "built $IMAGE"
