"""One shard of a scale-out run, as an AWS Batch child in the worker image:

    python -m sdtui.worker batch --bucket B --run R --shards W --model KEY [--file KEY ...]

Shard i (AWS_BATCH_JOB_ARRAY_INDEX; 0 for a plain job) reads the run's resolved requests,
skips every image an earlier attempt already finished (a spot reclaim resumes), copies the model
files from the bucket into scratch one after another, loads the model once and generates its
lines. Each image is saved with the same metadata as everywhere else, then its PNG and its index
line go to runs/R/out/. The job role's credentials come from the container (boto3's chain).

Exit codes: 0 done, 2 bad input (a missing model key, a bad prompts file), 4 generation failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sdtui import bucket_layout, protocol, sharding
from sdtui.modelfiles import hashed_name

log = logging.getLogger("sdtui.worker.batch")

ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"
# Test-only (moto sets no array index): derive the index from the child's job id "<parent>:<i>".
TEST_INDEX_FROM_JOB_ID = "SDTUI_TEST_ARRAY_INDEX_FROM_JOB_ID"
EXIT_OK, EXIT_BAD_INPUT, EXIT_GENERATION = 0, 2, 4
CHUNK = 8 * 1024 * 1024


class ChildError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def shard_index(shards: int, env: dict[str, str] | os._Environ = os.environ) -> int:
    """This child's shard: Batch's array index; 0 for a plain (W = 1) job."""
    if env.get(ARRAY_INDEX, "") != "":
        try:
            return int(env[ARRAY_INDEX])
        except ValueError:
            raise ChildError(f"{ARRAY_INDEX}={env[ARRAY_INDEX]!r} is not a number") from None
    if env.get(TEST_INDEX_FROM_JOB_ID) == "1" and ":" in env.get("AWS_BATCH_JOB_ID", ""):
        return int(env["AWS_BATCH_JOB_ID"].rsplit(":", 1)[1])
    if shards == 1:
        return 0
    raise ChildError(f"{ARRAY_INDEX} is not set, yet the run has {shards} shards")


# --- the bucket --------------------------------------------------------------------------------


class S3Store:
    """The few bucket operations a shard needs, within the job role's rights: get the model
    files and the run's prompts, list and put under the run."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket

    def keys(self, prefix: str) -> set[str]:
        found: set[str] = set()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=prefix):
            found.update(o["Key"] for o in page.get("Contents", []))
        return found

    def read(self, key: str, limit: int) -> bytes:
        reply = self._get(key)
        if reply["ContentLength"] > limit:
            raise ChildError(f"s3://{self.bucket}/{key} is larger than {limit >> 20} MiB")
        return reply["Body"].read()

    def write(self, key: str, data: bytes, content_type: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def download(self, key: str, dest: Path) -> str:
        """One sequential GET streamed to disk in bounded chunks, checked against the object's
        size and (when the upload recorded one) its sha256; returns the file's sha256."""
        reply = self._get(key)
        expected, digest = reply["ContentLength"], hashlib.sha256()
        wanted = reply.get("Metadata", {}).get(bucket_layout.SHA256_META)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        size = 0
        with open(partial, "wb") as out:
            body = reply["Body"]
            while chunk := body.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        if size != expected or (wanted and digest.hexdigest() != wanted):
            partial.unlink()
            raise ChildError(f"s3://{self.bucket}/{key} arrived damaged ({size} of {expected} "
                             "bytes, or a different sha256)", exit_code=EXIT_GENERATION)
        os.replace(partial, dest)
        log.info("fetched %s (%d MiB)", key, size >> 20)
        return digest.hexdigest()

    def _get(self, key: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ChildError(f"s3://{self.bucket}/{key} does not exist") from None
            raise


def fetch_files(store: Any, keys: list[str], scratch: Path) -> dict[str, str]:
    """The model and its extras into scratch, one file after another; returns each key's
    sha256."""
    digests = {}
    for key in keys:
        if ".." in Path(key).parts or Path(key).is_absolute():
            raise ChildError(f"model key {key!r} leaves the scratch directory")
        log.info("fetching s3://%s/%s", store.bucket, key)
        digests[key] = store.download(key, scratch / key)
    return digests


def model_digest(model: str, digests: dict[str, str], scratch: Path) -> str | None:
    """The model's sha256 as the other options record it: its checkpoint's, or its set's
    transformer's (a set given as its folder has no file of the model's own key); None for a
    diffusers folder."""
    name = hashed_name(scratch / model)
    return digests.get(str(PurePosixPath(model).parent / name)) if name else None


# --- the shard ---------------------------------------------------------------------------------


def run_shard(*, run: str, lines: list[dict[str, Any]], shard: int, shards: int, store: Any,
              sampler: Any, scratch: Path, extra: dict[str, Any] | None = None,
              cancel: threading.Event | None = None) -> int:
    """Generate the shard's unfinished images; returns how many it made. Each image is saved
    with its metadata (the outputs writer), then its PNG and index line are put in the bucket.
    An image whose index line already exists is never made again."""
    from sdtui.outputs import save_image

    finished = bucket_layout.finished_images(run, store.keys(bucket_layout.out_prefix(run)))
    todo = sharding.pending_lines(lines, shard, shards, finished)
    total = len(sharding.images_of(lines, sharding.shard_lines(len(lines), shard, shards)))
    done = total - len(sharding.images_of(lines, todo))
    made = 0
    local = scratch / "out"
    cancel = cancel or threading.Event()
    for number in todo:
        request = protocol.request("generate", id=sharding.line_id(number), **lines[number])

        def emit(kind: str, fields: dict[str, Any], number: int = number) -> None:
            nonlocal done, made
            if kind == "log":
                log.warning("line %d: %s", number + 1, fields.get("message"))
            if kind != "image" or (number, fields["index"]) in finished:
                return
            path = save_image(local, fields["png"], fields["params"])
            record = {"file": path.name, "time": datetime.now().astimezone().isoformat(
                timespec="seconds"), "params": fields["params"], "seconds": fields["seconds"],
                "shard": shard, **(extra or {})}
            store.write(bucket_layout.image_key(run, number, fields["index"]), path.read_bytes(),
                        "image/png")
            store.write(bucket_layout.index_key(run, number, fields["index"]),
                        json.dumps(record, ensure_ascii=False).encode(), "application/json")
            path.unlink()
            done, made = done + 1, made + 1
            log.info("shard %d/%d: line %d image %d in %.1f s (%d/%d)", shard, shards,
                     number + 1, fields["index"], fields["seconds"], done, total)

        sampler.run(request, emit, cancel)
    return made


# --- the entry point ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sdtui.worker batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bucket", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--model", required=True, help="the model's key (a file or a folder name)")
    p.add_argument("--file", action="append", default=[], metavar="KEY",
                   help="every key to copy into scratch (the model's files and the extras)")
    p.add_argument("--region", help="the bucket's region (default: the container's)")
    p.add_argument("--scratch", type=Path,
                   default=Path(tempfile.gettempdir()) / "sdtui-batch")
    p.add_argument("--device", help="force a torch device (default: cuda if present)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    try:
        return _main(args)
    except ChildError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except sharding.ShardingError as exc:
        log.error("bad prompts file: %s", exc)
        return EXIT_BAD_INPUT


def _main(args: argparse.Namespace) -> int:
    import boto3

    if not bucket_layout.is_run_id(args.run):
        raise ChildError(f"--run {args.run!r} is not a run id")
    shard = shard_index(args.shards)
    sharding.check_shard(shard, args.shards)
    store = S3Store(boto3.client("s3", region_name=args.region), args.bucket)
    lines = sharding.decode_lines(store.read(bucket_layout.prompts_key(args.run),
                                             sharding.MAX_PROMPTS_BYTES))
    finished = bucket_layout.finished_images(
        args.run, store.keys(bucket_layout.out_prefix(args.run)))
    if not sharding.pending_lines(lines, shard, args.shards, finished):
        log.info("shard %d/%d: every image is already in the bucket", shard, args.shards)
        return EXIT_OK
    started = time.monotonic()
    digests = fetch_files(store, args.file or [args.model], args.scratch / "model")
    fetch_seconds = time.monotonic() - started

    from sdtui.worker.models import ModelInvalid, load_model
    from sdtui.worker.sampling import Sampler

    try:
        model = load_model(str(args.scratch / "model" / args.model), device=args.device)
    except ModelInvalid as exc:
        raise ChildError(f"model {args.model}: {exc}") from None
    log.info("model loaded in %.1f s (fetched in %.1f s) on %s", model.load_seconds,
             fetch_seconds, model.device)
    sha256 = model_digest(args.model, digests, args.scratch / "model")
    extra = {"load_seconds": round(model.load_seconds + fetch_seconds, 3),
             "device": model.device}
    try:
        made = run_shard(run=args.run, lines=lines, shard=shard, shards=args.shards, store=store,
                         sampler=Sampler(model, sha256), scratch=args.scratch,
                         extra=extra)
    except ChildError:
        raise
    except Exception as exc:  # one line in the job's log, and a failed (not retried) child
        log.exception("generation failed")
        raise ChildError(f"generation failed: {' '.join(str(exc).split())}",
                         exit_code=EXIT_GENERATION) from None
    log.info("shard %d/%d: %d image(s) made", shard, args.shards, made)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
