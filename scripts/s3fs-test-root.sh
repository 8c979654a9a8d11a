#!/usr/bin/env bash
# The s3fs builds the IMDSv2 mount tests run, each in a minimal root of its distribution, run
# with the root's own libraries through the root's dynamic loader (tests/aws/s3fs_builds.py):
# - Debian trixie's s3fs package (upstream 1.95, the version the instance builds when its
#   distribution's is too old; see sdtui/deploy/aws/s3fs.py), with trixie's source record of
#   s3fs-fuse beside it, whose orig tarball checksum the test compares with the one the instance
#   verifies;
# - Ubuntu 24.04 (noble)'s own s3fs package, 1.93, the one the Deep Learning AMI installs.
#   Debian has no Ubuntu archive key: it comes from Debian trixie's ubuntu-keyring package,
#   pinned by its sha256, and debootstrap checks noble's archive with it.
# Usage: scripts/s3fs-test-root.sh [TRIXIE_DIR [NOBLE_DIR]]
#   (defaults /var/cache/sdtui-test/s3fs-trixie and /var/cache/sdtui-test/s3fs-noble)
set -euo pipefail

TRIXIE="${1:-${SDTUI_TEST_S3FS_ROOT:-/var/cache/sdtui-test/s3fs-trixie}}"
NOBLE="${2:-${SDTUI_TEST_S3FS_NOBLE_ROOT:-/var/cache/sdtui-test/s3fs-noble}}"
UBUNTU_MIRROR="${SDTUI_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}"
KEYRING_DEB=pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1-0.2_all.deb
KEYRING_SHA256=b2e7ed48431bf9e7978ae810bbdaf253093570d6e3f864e575b7c13554b81174

# shellcheck source=scripts/debian-mirror.sh
source "$(dirname "$0")/debian-mirror.sh"
mirror="$(debian_mirror)" || { echo "no Debian mirror found in /etc/apt/sources.list(.d)" >&2; exit 1; }

version_in() {
  "$1"/lib64/ld-linux-x86-64.so.2 --library-path "$1/usr/lib/x86_64-linux-gnu:$1/lib/x86_64-linux-gnu" \
    "$1/usr/bin/s3fs" --version | head -n1
}

# build_root ROOT MARKER BUILDER: run BUILDER WORK_ROOT WORK_DIR once, under a lock (several
# checkouts may run the setup at once), and move its root into place only when it succeeded.
build_root() {
  local root="$1" marker="$2" builder="$3" work
  if [[ -x "$root/usr/bin/s3fs" && -s "$root/$marker" ]]; then
    echo "$root already holds $(version_in "$root")"
    return 0
  fi
  mkdir -p "$(dirname "$root")"
  exec 9>"$root.lock"
  flock 9
  if [[ ! ( -x "$root/usr/bin/s3fs" && -s "$root/$marker" ) ]]; then
    work="$(mktemp -d "$root.tmp.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: $work is local
    trap "rm -rf '$work'" EXIT
    "$builder" "$work/root" "$work"
    rm -rf "$work/root/var/cache/apt/archives/"*.deb
    rm -rf "$root"
    mv "$work/root" "$root"
    rm -rf "$work"
    trap - EXIT
    echo "built $root: $(version_in "$root")"
  fi
  exec 9>&-
}

trixie_root() {
  local root="$1" work="$2"
  echo "debootstrap trixie with s3fs from $mirror ..."
  debootstrap --variant=minbase --include=s3fs trixie "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  curl -fsS --retry 3 -o "$work/Sources.xz" "$mirror/dists/trixie/main/source/Sources.xz"
  xz -dc "$work/Sources.xz" | awk '/^Package: s3fs-fuse$/ {keep = 1} keep && /^$/ {keep = 0} keep' \
    >"$root/sdtui-s3fs-fuse.sources"
  [[ -s "$root/sdtui-s3fs-fuse.sources" ]] || { echo "no s3fs-fuse in trixie's Sources" >&2; exit 1; }
}

noble_root() {
  local root="$1" work="$2"
  curl -fsS --retry 3 -o "$work/keyring.deb" "$mirror/$KEYRING_DEB"
  echo "$KEYRING_SHA256  $work/keyring.deb" | sha256sum -c --quiet \
    || { echo "ubuntu-keyring does not match its pinned sha256" >&2; exit 1; }
  dpkg-deb -x "$work/keyring.deb" "$work/keyring"
  echo "debootstrap noble (Ubuntu 24.04) with s3fs from $UBUNTU_MIRROR ..."
  # Every Ubuntu suite uses debootstrap's gutsy script; older debootstraps do not know noble.
  debootstrap --variant=minbase --components=main,universe --include=s3fs \
    --keyring "$work/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg" \
    noble "$root" "$UBUNTU_MIRROR" /usr/share/debootstrap/scripts/gutsy \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Package} ${Version}\n' s3fs \
    >"$root/sdtui-s3fs.version"
}

build_root "$TRIXIE" sdtui-s3fs-fuse.sources trixie_root
build_root "$NOBLE" sdtui-s3fs.version noble_root
