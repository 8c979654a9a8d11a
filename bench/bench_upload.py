"""Model upload throughput, side by side in one run (issue 5's speed target: >= 0.9x boto3).

  A  boto3's own `upload_file` with default settings (8 MiB parts, 10 threads)
  B  sdtui's `upload_models`: sha256 for the skip check, metadata, byte progress, orphan
     cleanup, 16 MiB parts on 16 threads

The same file (1 GiB by default) goes to the same moto server over HTTP; runs are interleaved
(A B A B ...) and medians are compared. The ratio is B's throughput over A's.

Usage: python bench/bench_upload.py [--size-mib 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3

from sdtui.deploy.aws.upload import upload_models

BUCKET = "sdtui-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    binary = shutil.which("moto_server") or "/work/venv/bin/moto_server"
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return proc, url
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)


def write_file(path: Path, size: int) -> None:
    """A file that passes as a .safetensors checkpoint: a valid header, then random bytes."""
    header = b'{"__metadata__":{}}'
    block = os.urandom(16 * 2**20)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        left = size - 8 - len(header)
        while left > 0:
            f.write(block[:left])
            left -= len(block)


def delete_all(s3) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    proc, url = start_moto()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    s3 = boto3.client("s3", endpoint_url=url)
    s3.create_bucket(Bucket=BUCKET)
    size = args.size_mib * 2**20
    times: dict[str, list[float]] = {"boto3 upload_file": [], "sdtui upload_models": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model.safetensors"
            write_file(model, size)
            for _ in range(args.runs):
                delete_all(s3)
                started = time.perf_counter()
                s3.upload_file(str(model), BUCKET, model.name)
                times["boto3 upload_file"].append(time.perf_counter() - started)

                delete_all(s3)
                started = time.perf_counter()
                result = upload_models(s3, BUCKET, [model])
                times["sdtui upload_models"].append(time.perf_counter() - started)
                assert result.uploaded == [model.name]
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    print(f"upload of {args.size_mib} MiB to moto over HTTP, {args.runs} runs each (median):")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in medians.items():
        print(f"  {name:<22} {seconds:6.2f} s  {args.size_mib / seconds:7.1f} MiB/s")
    ratio = medians["boto3 upload_file"] / medians["sdtui upload_models"]
    print(f"  ratio sdtui/boto3 throughput: {ratio:.2f}x (target >= 0.90x)")


if __name__ == "__main__":
    main()
