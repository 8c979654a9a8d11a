"""The s3fs the instance mounts the bucket with: which version, how it is installed, and the
exact mount options (pure functions; bootstrap.py puts them in the host script and the IMDSv2
mount test runs the same ones).

Which s3fs: s3fs before 1.91 cannot get the instance role's credentials when IMDSv2 is required
(it asks for the role name without the session token, s3fs-fuse PR #1760, and its token PUT
carries `Expect: 100-continue`, which the metadata service answers with 417, #1765). Ubuntu
24.04, the Deep Learning AMI's base, packages 1.93, which has both fixes: the instance installs
that package (seconds). Only where the distribution's s3fs is older (Ubuntu 22.04 and Debian 12
ship 1.90) does it build upstream 1.95 instead, from the release tarball verified by its sha256:
the same tarball Debian 13 (trixie) built its s3fs 1.95-1 from (trixie's source record lists this
checksum for s3fs-fuse_1.95.orig.tar.gz), built once per instance into /usr/local and kept on the
root volume across stops. The IMDSv2 mount test runs Ubuntu 24.04's own s3fs 1.93 package and
Debian's 1.95 package.
"""

from __future__ import annotations

import shlex

VERSION = "1.95"
SOURCE_URL = f"https://github.com/s3fs-fuse/s3fs-fuse/archive/refs/tags/v{VERSION}.tar.gz"
SOURCE_SHA256 = "0c97b8922f005500d36f72aee29a1345c94191f61d795e2a7b79fb7e3e6f5517"
BINARY = "/usr/local/bin/s3fs"  # where the fallback build installs
PACKAGED_BINARY = "/usr/bin/s3fs"  # the distribution's package
MIN_VERSION = "1.91"  # the first with both IMDSv2 fixes
LOG_FILE = "/var/log/sdtui-s3fs.log"
# Debian's own build configuration of 1.95 (GnuTLS with gcrypt), on Ubuntu's libraries; fuse3
# brings mount.fuse for the fstab entry, media-types the MIME table s3fs reads.
BUILD_PACKAGES = (
    "autoconf", "automake", "g++", "make", "pkg-config", "libfuse-dev", "libcurl4-gnutls-dev",
    "libgnutls28-dev", "libgcrypt20-dev", "libxml2-dev", "fuse3", "media-types", "curl",
)
APT_LOCK_TIMEOUT_S = 300  # boot-time apt (unattended-upgrades) holds the dpkg lock for a while
APT_GET = f"apt-get -o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}"


def mount_options(bucket: str, region: str, cache_dir: str, *, endpoint: str | None = None,
                  passwd_file: str | None = None, log_file: str | None = None) -> str:
    """The `-o` string. The instance role's credentials (`iam_role=auto`, read from IMDSv2)
    unless a passwd file is given (a test-only setting). A bucket name with dots cannot be a
    virtual host under S3's wildcard certificate, so it is addressed by path; so is a custom
    endpoint. With `log_file`, s3fs writes its errors there instead of to syslog, so the
    bootstrap can show why a mount failed."""
    options = ["ro", "allow_other", "umask=0022", f"use_cache={cache_dir}"]
    if log_file:
        options += [f"logfile={log_file}", "dbglevel=err"]
    options.append(f"passwd_file={passwd_file}" if passwd_file else "iam_role=auto")
    options += [f"url={endpoint or f'https://s3.{region}.amazonaws.com'}", f"endpoint={region}"]
    if endpoint or "." in bucket:
        options.append("use_path_request_style")
    return ",".join(options)


def mount_argv(bucket: str, mount_point: str, options: str, binary: str = BINARY) -> list[str]:
    """The mount command, run as root (s3fs daemonises once the bucket answers)."""
    return [binary, bucket, mount_point, "-o", options]


def version_shell(binary: str) -> str:
    """A shell pipeline printing the s3fs at `binary`'s version ("1.93"), or nothing; it
    succeeds either way (the bootstrap runs under `set -eo pipefail`)."""
    return (f"{{ {shlex.quote(binary)} --version 2>/dev/null || true; }} "
            "| sed -n '1s/.*File System V\\([0-9][0-9.]*\\).*/\\1/p'")


def install_script(binary: str = BINARY, packaged: str = PACKAGED_BINARY, *,
                   build: bool = True) -> str:
    """Bash lines that set $s3fs_bin to an s3fs with the IMDSv2 fixes: the build at `binary`
    when it is VERSION; else the distribution's at `packaged` when it is at least MIN_VERSION,
    installed from the archive when its candidate is; else VERSION built from the pinned
    tarball into `binary`. With build=False (a test sandbox, no apt), an error instead of the
    install and the build. Needs `fail` defined by the caller."""
    packages = " ".join(BUILD_PACKAGES)
    at_least = f'dpkg --compare-versions "$v" ge {MIN_VERSION}'
    head = f"""s3fs_bin=""
v="$({version_shell(binary)})"
if [ "$v" = {VERSION} ]; then
  s3fs_bin={shlex.quote(binary)}
  echo "s3fs $v is installed (built from source)"
fi
v="$({version_shell(packaged)})"
if [ -z "$s3fs_bin" ] && [ -n "$v" ] && {at_least}; then
  s3fs_bin={shlex.quote(packaged)}
  echo "s3fs $v is installed (the distribution's package)"
fi
"""
    if not build:
        return head + f"""[ -n "$s3fs_bin" ] \\
  || fail "test sandbox: no s3fs {VERSION} at {binary} and no s3fs >= {MIN_VERSION} at {packaged}"
"""
    return head + f"""if [ -z "$s3fs_bin" ]; then
  {APT_GET} update -q >/dev/null || fail "apt-get update failed (see /var/log/apt)"
  v="$(apt-cache policy s3fs | awk '/Candidate:/ {{print $2}}')"
  if [ -n "$v" ] && [ "$v" != "(none)" ] && {at_least}; then
    echo "installing the distribution's s3fs $v"
    {APT_GET} install -y -q --no-install-recommends s3fs >/dev/null \\
      || fail "could not install the distribution's s3fs $v"
    s3fs_bin={shlex.quote(packaged)}
  fi
fi
if [ -z "$s3fs_bin" ]; then
  echo "building s3fs {VERSION} from source (the distribution's is older than {MIN_VERSION}; \\
once per instance, about a minute)"
  {APT_GET} install -y -q --no-install-recommends {packages} >/dev/null \\
    || fail "could not install the packages s3fs {VERSION} builds with"
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
  s3fs_bin={shlex.quote(binary)}
  "$s3fs_bin" --version | head -n1
fi
"""
