#!/usr/bin/env bash
# A Debian trixie root holding trixie's s3fs package (upstream 1.95, the version the instance
# builds; see sdtui/deploy/aws/s3fs.py), for the IMDSv2 mount test: its s3fs runs with the
# root's own libraries through the root's dynamic loader. Beside it, trixie's source record of
# s3fs-fuse, whose orig tarball checksum the test compares with the one the instance verifies.
# Usage: scripts/s3fs-test-root.sh [DIR]   (default /var/cache/sdtui-test/s3fs-trixie)
set -euo pipefail

ROOT="${1:-${SDTUI_TEST_S3FS_ROOT:-/var/cache/sdtui-test/s3fs-trixie}}"
SUITE=trixie
SOURCES_RECORD="$ROOT/sdtui-s3fs-fuse.sources"

if [[ -x "$ROOT/usr/bin/s3fs" && -s "$SOURCES_RECORD" ]]; then
  echo "$ROOT already holds $("$ROOT"/lib64/ld-linux-x86-64.so.2 \
    --library-path "$ROOT/usr/lib/x86_64-linux-gnu" "$ROOT/usr/bin/s3fs" --version | head -n1)"
  exit 0
fi

# shellcheck source=scripts/debian-mirror.sh
source "$(dirname "$0")/debian-mirror.sh"
mirror="$(debian_mirror)" || { echo "no Debian mirror found in /etc/apt/sources.list(.d)" >&2; exit 1; }

mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9  # several checkouts may run the setup at once
[[ -x "$ROOT/usr/bin/s3fs" && -s "$SOURCES_RECORD" ]] && exit 0

work="$(mktemp -d "$ROOT.tmp.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "debootstrap $SUITE with s3fs from $mirror ..."
debootstrap --variant=minbase --include=s3fs "$SUITE" "$work/root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
curl -fsS --retry 3 -o "$work/Sources.xz" "$mirror/dists/$SUITE/main/source/Sources.xz"
xz -dc "$work/Sources.xz" | awk '/^Package: s3fs-fuse$/ {keep = 1} keep && /^$/ {keep = 0} keep' \
  >"$work/root/sdtui-s3fs-fuse.sources"
[[ -s "$work/root/sdtui-s3fs-fuse.sources" ]] || { echo "no s3fs-fuse in $SUITE's Sources" >&2; exit 1; }
rm -rf "$work/root/var/cache/apt/archives/"*.deb
rm -rf "$ROOT"
mv "$work/root" "$ROOT"
echo "built $ROOT"
