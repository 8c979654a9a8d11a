"""The s3fs the instance mounts the bucket with: which version, how it is installed, and the
exact mount options (pure functions; bootstrap.py puts them in the host script and the IMDSv2
mount test runs the same ones).

Why a pinned build: s3fs before 1.91 cannot get the instance role's credentials when IMDSv2 is
required (it asks for the role name without the session token, s3fs-fuse PR #1760, and its
token PUT carries `Expect: 100-continue`, which the metadata service answers with 417, #1765).
Ubuntu 22.04 ships 1.90 and Ubuntu 24.04 ships 1.93, and no Debian suite carries 1.93, so the
tests could not run the distribution's version. The instance therefore builds upstream 1.95,
from the release tarball verified by its sha256: the same tarball Debian 13 (trixie) built its
s3fs 1.95-1 from (trixie's source record lists this checksum for s3fs-fuse_1.95.orig.tar.gz),
and that Debian package is what the IMDSv2 test runs. It is built once per instance into
/usr/local and kept on the root volume across stops.
"""

from __future__ import annotations

import shlex

VERSION = "1.95"
SOURCE_URL = f"https://github.com/s3fs-fuse/s3fs-fuse/archive/refs/tags/v{VERSION}.tar.gz"
SOURCE_SHA256 = "0c97b8922f005500d36f72aee29a1345c94191f61d795e2a7b79fb7e3e6f5517"
BINARY = "/usr/local/bin/s3fs"
# Debian's own build configuration of 1.95 (GnuTLS with gcrypt), on Ubuntu's libraries; fuse3
# brings mount.fuse for the fstab entry, media-types the MIME table s3fs reads.
BUILD_PACKAGES = (
    "autoconf", "automake", "g++", "make", "pkg-config", "libfuse-dev", "libcurl4-gnutls-dev",
    "libgnutls28-dev", "libgcrypt20-dev", "libxml2-dev", "fuse3", "media-types", "curl",
)
APT_LOCK_TIMEOUT_S = 300  # boot-time apt (unattended-upgrades) holds the dpkg lock for a while
APT_GET = f"apt-get -o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}"


def mount_options(bucket: str, region: str, cache_dir: str, *, endpoint: str | None = None,
                  passwd_file: str | None = None) -> str:
    """The `-o` string. The instance role's credentials (`iam_role=auto`, read from IMDSv2)
    unless a passwd file is given (a test-only setting). A bucket name with dots cannot be a
    virtual host under S3's wildcard certificate, so it is addressed by path; so is a custom
    endpoint."""
    options = ["ro", "allow_other", "umask=0022", f"use_cache={cache_dir}"]
    options.append(f"passwd_file={passwd_file}" if passwd_file else "iam_role=auto")
    options += [f"url={endpoint or f'https://s3.{region}.amazonaws.com'}", f"endpoint={region}"]
    if endpoint or "." in bucket:
        options.append("use_path_request_style")
    return ",".join(options)


def mount_argv(bucket: str, mount_point: str, options: str, binary: str = BINARY) -> list[str]:
    """The mount command, run as root (s3fs daemonises once the bucket answers)."""
    return [binary, bucket, mount_point, "-o", options]


def install_script(binary: str = BINARY, *, build: bool = True) -> str:
    """Bash lines that make sure `binary` is s3fs VERSION: nothing to do when it already is,
    else built from the pinned tarball (with build=False, a test sandbox, an error instead).
    Needs `fail` defined by the caller."""
    packages = " ".join(BUILD_PACKAGES)
    check = f'{shlex.quote(binary)} --version 2>/dev/null | grep -q "File System V{VERSION} "'
    have = f"""if {check}; then
  echo "s3fs {VERSION} is installed"
"""
    if not build:
        return have + f"""else
  fail "test sandbox: no s3fs {VERSION} at {binary}"
fi
"""
    return have + f"""else
  echo "building s3fs {VERSION} from source (once per instance; about a minute)"
  if ! {{ {APT_GET} update -q >/dev/null \\
         && {APT_GET} install -y -q --no-install-recommends {packages} >/dev/null; }}; then
    fail "could not install the packages s3fs {VERSION} builds with"
  fi
  src="$(mktemp -d)"
  curl -fsSL --retry 3 -o "$src/s3fs.tar.gz" {shlex.quote(SOURCE_URL)} \\
    || fail "could not download the s3fs {VERSION} source"
  echo "{SOURCE_SHA256}  $src/s3fs.tar.gz" | sha256sum -c --quiet \\
    || fail "the s3fs {VERSION} source does not match its pinned sha256"
  tar -xzf "$src/s3fs.tar.gz" -C "$src" --strip-components=1
  (cd "$src" && ./autogen.sh && ./configure --prefix=/usr/local --with-gnutls \\
     && make -j"$(nproc)" && make install) >"$src/build.log" 2>&1 \\
    || {{ tail -n 20 "$src/build.log"; fail "could not build s3fs {VERSION}"; }}
  rm -rf "$src"
  {shlex.quote(binary)} --version | head -n1
fi
"""
