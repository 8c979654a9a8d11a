"""Model files to the bucket: multipart and concurrent, with byte progress; unchanged files are
skipped by size and sha256 kept in the object's metadata; no multipart upload is left behind."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import error_code
from sdtui.modelfiles import companion_files, deployment_files, sha256_file

MiB = 1024 * 1024
# Bigger parts and more threads than boto3's defaults (8 MiB, 10): fewer requests per GB.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB, max_concurrency=16
)
SHA256_META = "sha256"


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str
    size: int
    mtime_ns: int


@dataclass
class UploadResult:
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    # key -> {"size", "mtime_ns", "sha256"}: lets the next run skip re-hashing unchanged files
    digests: dict[str, dict] = field(default_factory=dict)


def local_files(models: list[Path], *, model_kept: bool = False) -> list[LocalFile]:
    """Every file to upload, a checkpoint's sidecars included, keyed as Option B lays them out.
    `model_kept`: the model is gone from this machine and the bucket holds it: the rest only."""
    files: dict[str, LocalFile] = {}
    for path, relative in (companion_files if model_kept else deployment_files)(models):
        stat = path.stat()
        files[relative] = LocalFile(path, relative, stat.st_size, stat.st_mtime_ns)
    return list(files.values())



def remote_sha256(s3, bucket: str, key: str, size: int) -> str | None:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    if head["ContentLength"] != size:
        return None
    return head.get("Metadata", {}).get(SHA256_META)


def missing_in_bucket(s3, bucket: str, objects: dict[str, dict]) -> list[str]:
    """The keys of `objects` (key -> the size and sha256 recorded at upload) that the bucket
    no longer holds as recorded."""
    return [key for key, meta in objects.items()
            if remote_sha256(s3, bucket, key, int(meta.get("size", -1))) != meta["sha256"]]


def abort_orphans(s3, bucket: str, keys: set[str]) -> int:
    """Abort unfinished multipart uploads of our keys (left by a crash or Ctrl-C)."""
    aborted = 0
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            if upload["Key"] in keys:
                s3.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
    return aborted


class _ByteCounter:
    """boto3 calls back from several threads; this sums and reports, and stops on cancel."""

    def __init__(self, total: int, report: Callable[[int, int], None],
                 check_cancel: Callable[[], None]) -> None:
        self.done = 0
        self.total = total
        self._report = report
        self._check_cancel = check_cancel
        self._lock = threading.Lock()

    def add(self, amount: int) -> None:
        with self._lock:
            self.done += amount
            done = self.done
        self._report(done, self.total)
        self._check_cancel()


def upload_models(
    s3,
    bucket: str,
    models: list[Path],
    *,
    progress: Callable[[int, int], None] = lambda done, total: None,
    check_cancel: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = lambda line: None,
    known_digests: dict[str, dict] | None = None,
    config: TransferConfig = TRANSFER_CONFIG,
    model_kept: bool = False,
) -> UploadResult:
    files = local_files(models, model_kept=model_kept)
    keys = {f.key for f in files}
    result = UploadResult()
    if aborted := abort_orphans(s3, bucket, keys):
        log(f"aborted {aborted} unfinished upload(s) from an earlier run")
    counter = _ByteCounter(sum(f.size for f in files), progress, check_cancel)
    try:
        for file in files:
            check_cancel()
            digest = _local_digest(file, (known_digests or {}).get(file.key))
            result.digests[file.key] = {
                "size": file.size, "mtime_ns": file.mtime_ns, "sha256": digest
            }
            if remote_sha256(s3, bucket, file.key, file.size) == digest:
                result.skipped.append(file.key)
                counter.add(file.size)
                log(f"{file.key}: unchanged, skipped")
                continue
            log(f"{file.key}: uploading {file.size} bytes")
            before = counter.done
            s3.upload_file(
                str(file.path),
                bucket,
                file.key,
                ExtraArgs={"Metadata": {SHA256_META: digest}},
                Callback=counter.add,
                Config=config,
            )
            result.bytes_sent += counter.done - before
            result.uploaded.append(file.key)
    finally:
        abort_orphans(s3, bucket, keys)
    return result


def _local_digest(file: LocalFile, known: dict | None) -> str:
    if known and known.get("size") == file.size and known.get("mtime_ns") == file.mtime_ns:
        return str(known["sha256"])
    return sha256_file(file.path)
