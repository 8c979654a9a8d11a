#!/bin/sh
# Install the worker's locked dependency set into an image (both Dockerfiles run this):
# torch at the lock's version from TORCH_INDEX_URL (the CPU or the CUDA wheel index; only that
# build variant differs between the images), then every locked package with --no-deps, then a
# check that the environment is exactly the lock.
# Usage: install-worker-deps.sh TORCH_INDEX_URL   (run from the folder holding the lock)
set -eu
index="$1"
here="$(cd "$(dirname "$0")" && pwd)"
lock="$here/requirements-worker.lock"

fail() { echo "ERROR: $*" >&2; exit 1; }

python="$(python3 -c 'import platform; print(platform.python_version())')"
case "$python" in
  3.11.*) ;;
  *) fail "the base image runs Python $python, the worker's lock is resolved for Python 3.11: \
use a Python 3.11 base image (python:3.11-slim)" ;;
esac

torch="$(sed -n 's/^torch==//p' "$lock")"
[ -n "$torch" ] || fail "no torch pin in $lock"
have="$(python3 -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null \
  || true)"
if [ -n "$have" ]; then
  # A base image's own torch would be kept by pip, whatever the lock says: refuse a different one.
  [ "${have%%+*}" = "$torch" ] \
    || fail "the base image carries torch $have, the worker's lock pins torch==$torch: use a \
base image without torch (python:3.11-slim) or with torch $torch"
  echo "torch $have is in the base image"
else
  python3 -m pip install --index-url "$index" "torch==$torch"
fi
python3 -m pip install --no-deps -r "$lock"
python3 "$here/lock.py" "$lock"
echo "installed the worker's locked set ($(grep -c '==' "$lock") packages, torch $torch)"
