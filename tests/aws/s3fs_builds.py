"""The s3fs builds the tests run, each from a root made by scripts/s3fs-test-root.sh and run
with that root's own libraries through its own dynamic loader: Debian trixie's 1.95 (the upstream
version the instance builds when it must), Ubuntu 24.04's own 1.93 package (the one the Deep
Learning AMI installs), and the host's own 1.90 (Debian 12's, as old as Ubuntu 22.04's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

S3FS_ROOT = Path(os.environ.get("SDTUI_TEST_S3FS_ROOT", "/var/cache/sdtui-test/s3fs-trixie"))
NOBLE_S3FS_ROOT = Path(os.environ.get("SDTUI_TEST_S3FS_NOBLE_ROOT",
                                      "/var/cache/sdtui-test/s3fs-noble"))
ROOTS = {"trixie": S3FS_ROOT, "noble": NOBLE_S3FS_ROOT}
HOST_S3FS = Path("/usr/bin/s3fs")
HOST_S3FS_VERSION = "1.90"
NOBLE_S3FS_VERSION = "1.93"


def require(condition: bool, reason: str) -> None:
    """Skip without the thing; under CI=true, fail: CI must run every test."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run this test; scripts/setup-test-env.sh prepares it)")
    pytest.skip(reason)


def install_wrapper(path: Path, build: str = "trixie") -> Path:
    """Put an `s3fs` at `path` (e.g. the sandboxed instance's /usr/local/bin/s3fs) that runs the
    chosen build: "trixie", "noble" or "host"."""
    if build in ROOTS:
        root = ROOTS[build]
        require((root / "usr/bin/s3fs").exists(),
                f"needs the {build} s3fs root at {root} (scripts/s3fs-test-root.sh)")
        libs = f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu"
        command = f"{root}/lib64/ld-linux-x86-64.so.2 --library-path {libs} {root}/usr/bin/s3fs"
    else:
        require(HOST_S3FS.exists(), f"needs the host's s3fs at {HOST_S3FS}")
        command = str(HOST_S3FS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    path.chmod(0o755)
    return path
