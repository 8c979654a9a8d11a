#!/usr/bin/env bash
# Make a fresh Debian 12 machine (as root) ready for the tests: Debian packages, the repo's
# .venv with the worker's locked dependency set (CPU torch) and the client and dev
# dependencies, a running Docker engine, the offline base image and the Debian trixie root
# whose s3fs the IMDSv2 mount test runs. Idempotent and quiet unless something fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# cloud-init and shellcheck check the instance's user data and bootstrap script; iproute2 and
# util-linux give the IMDSv2 test its network namespace; docker-registry is a real registry on
# 127.0.0.1 for the scale-out's ECR push test.
APT_PACKAGES=(docker.io s3fs openssh-server debootstrap tmux fuse3 python3-venv ca-certificates
              cloud-init shellcheck iproute2 util-linux curl xz-utils docker-registry)
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

# Three locked sets, installed exactly: the worker's (torch's CPU wheel first, then the lock
# without dependencies: the set the images install), the client's (requirements.lock) and the
# test tools' (requirements-dev.lock), each with --no-deps, then the package itself without
# build isolation (the worker's lock pins its setuptools). A venv made from other sets is made
# anew rather than patched: a package left over from an older set would go unseen by the checks.
LOCKS=(sdtui/container/requirements-worker.lock requirements.lock requirements-dev.lock)
stamp=.venv/.sdtui-installed
wanted="$(cat pyproject.toml sdtui/container/requirements-worker* requirements*.txt "${LOCKS[@]}" \
          | sha256sum)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
  rm -rf .venv
  quietly python3 -m venv .venv
  quietly .venv/bin/pip install --no-deps "torch==$(sed -n 's/^torch==//p' "${LOCKS[0]}")"
  for lock in "${LOCKS[@]}"; do
    quietly .venv/bin/pip install --no-deps -r "$lock"
  done
  quietly .venv/bin/pip install --no-deps --no-build-isolation -e .
  quietly .venv/bin/python sdtui/container/lock.py "${LOCKS[@]}"
  echo "$wanted" >"$stamp"
fi

quietly scripts/start-dockerd.sh
quietly scripts/offline-base-image.sh
quietly scripts/s3fs-test-root.sh
