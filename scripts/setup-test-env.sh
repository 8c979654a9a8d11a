#!/usr/bin/env bash
# Make a fresh Debian 12 machine (as root) ready for the tests: Debian packages, the repo's
# .venv with CPU torch and the worker and dev extras, a running Docker engine and the offline
# base image. Idempotent and quiet unless something fails.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(docker.io s3fs openssh-server debootstrap tmux fuse3 python3-venv ca-certificates)
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

quietly() {  # run a command; show its output only if it fails
  if ! "$@" >>"$LOG" 2>&1; then
    echo "setup-test-env: failed: $*" >&2
    tail -n 60 "$LOG" >&2
    exit 1
  fi
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  quietly apt-get update
  DEBIAN_FRONTEND=noninteractive quietly apt-get install -y --no-install-recommends "${missing[@]}"
fi

# torch first: the CPU wheel, so the extras' bare `torch` does not pull the CUDA build.
stamp=.venv/.sdtui-installed
wanted="$(cat pyproject.toml sdtui/container/requirements-worker*.txt requirements-dev*.txt | sha256sum)"
if [[ ! -x .venv/bin/python ]]; then
  quietly python3 -m venv .venv
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
  quietly .venv/bin/pip install torch==2.13.0
  quietly .venv/bin/pip install -e '.[worker,dev]'
  # Only for its MIT CLIP BPE table (the tokenizer test re-derives the shipped vocab from it);
  # its own dependencies would pull torchvision.
  quietly .venv/bin/pip install --no-deps open-clip-torch
  quietly .venv/bin/pip install --no-deps -r sdtui/container/requirements-worker-nodeps.txt
  quietly .venv/bin/pip install --no-deps -r requirements-dev-nodeps.txt
  echo "$wanted" >"$stamp"
fi

quietly scripts/start-dockerd.sh
quietly scripts/offline-base-image.sh
