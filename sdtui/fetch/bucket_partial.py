"""A partial download kept in the bucket as it grows, for a fetch whose disk goes with it (the
scale-out's one-shot job): the next job puts it back on its own disk and resumes it with a Range
request, so a fetch cut short (Ctrl-C, a terminated job, the hub failing) never starts over.

The part file's bytes go to `fetch/partial/<checksum>/<offset>` objects, one per span: a span is
sent once SPAN_BYTES new bytes are written or SPAN_S seconds after the first unsent one (a slow
or stalled hub), and what is left when the transfer stops short. Spans are put back in offset
order up to the first gap (a job killed between two). They are deleted once the whole file is in
`models/`, or when it arrived corrupt (so a bad span is never put back twice)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sdtui.fetch.plan import RemoteFile
from sdtui.fetch.store import key as blob_key

PREFIX = "fetch/partial/"
SPAN_BYTES = 64 * 1024 * 1024  # what a job killed without warning costs at most, or SPAN_S of it
SPAN_S = 10.0
READ = 8 * 1024 * 1024


def prefix_of(f: RemoteFile) -> str:
    return f"{PREFIX}{blob_key(f)}/"


def span_key(f: RemoteFile, offset: int) -> str:
    return f"{prefix_of(f)}{offset:016d}"


class BucketKeeper:
    """What download.fetch_file calls while it fetches into a disk that does not outlive it."""

    def __init__(self, s3, bucket: str, *, span_bytes: int = SPAN_BYTES,
                 span_s: float = SPAN_S) -> None:
        self.s3, self.bucket = s3, bucket
        self.span_bytes, self.span_s = span_bytes, span_s
        self._lock = threading.Lock()
        self._written = self._kept = 0
        self._since: float | None = None  # when the first unsent byte was written

    def _listed(self, f: RemoteFile) -> list[tuple[int, int, str]]:
        """(offset, size, key) of every span kept, in offset order."""
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix_of(f)):
            for obj in page.get("Contents", []):
                tail = obj["Key"].removeprefix(prefix_of(f))
                if tail.isdigit():
                    found.append((int(tail), int(obj["Size"]), obj["Key"]))
        return sorted(found)

    def _spans(self, f: RemoteFile) -> list[tuple[int, int, str]]:
        """The spans that follow one another from byte 0, up to the first gap or overlap."""
        spans, end = [], 0
        for offset, size, key in self._listed(f):
            if offset != end:
                break
            spans.append((offset, size, key))
            end += size
        return spans

    def restore(self, f: RemoteFile, part: Path) -> int:
        """Put back what the bucket keeps beyond the part file's end; the bytes now in it."""
        have = part.stat().st_size if part.exists() else 0
        end = 0
        for offset, size, key in self._spans(f):
            end = offset + size
            if end <= have:
                continue
            skip = have - offset
            body = self.s3.get_object(Bucket=self.bucket, Key=key,
                                      **({"Range": f"bytes={skip}-"} if skip else {}))["Body"]
            with part.open("r+b" if part.exists() else "wb") as out:
                out.seek(have)
                while block := body.read(READ):
                    out.write(block)
                    have += len(block)
        with self._lock:
            self._written, self._kept = have, min(end, have)
            self._since = None if have == self._kept else time.monotonic()
        return have

    def wrote(self, have: int) -> None:
        """The part file holds `have` bytes, on the disk (flushed)."""
        with self._lock:
            if self._since is None and have > self._kept:
                self._since = time.monotonic()
            self._written = have

    def restart(self, f: RemoteFile) -> None:
        """The server sent the whole file again: nothing kept before is part of it."""
        with self._lock:
            self._delete(f)
            self._written = self._kept = 0
            self._since = None

    def forget(self, f: RemoteFile) -> None:
        with self._lock:
            self._delete(f)

    @contextlib.contextmanager
    def keeping(self, f: RemoteFile, part: Path) -> Iterator[None]:
        """Spans sent while the body comes; what is unsent when it stops short, sent then."""
        stop = threading.Event()
        sender = threading.Thread(target=self._send_while, args=(f, part, stop), daemon=True)
        sender.start()
        try:
            yield
        except BaseException:
            stop.set()
            sender.join()
            self._send(f, part, whole=True)
            raise
        stop.set()
        sender.join()

    def _send_while(self, f: RemoteFile, part: Path, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            self._send(f, part, whole=False)

    def _send(self, f: RemoteFile, part: Path, *, whole: bool) -> None:
        """A span of [kept, written) when one is due; `whole`: every unsent byte, now."""
        from botocore.exceptions import BotoCoreError, ClientError

        with self._lock:
            while (new := self._written - self._kept) > 0 and (
                    whole or new >= self.span_bytes or (
                        self._since is not None
                        and time.monotonic() - self._since >= self.span_s)):
                with part.open("rb") as src:
                    src.seek(self._kept)
                    body = src.read(min(new, self.span_bytes))
                try:
                    self.s3.put_object(Bucket=self.bucket, Key=span_key(f, self._kept),
                                       Body=body)
                except (BotoCoreError, ClientError):
                    return  # still on this disk: the next span tries again
                self._kept += len(body)
                self._since = time.monotonic() if self._written > self._kept else None

    def _delete(self, f: RemoteFile) -> None:
        keys = [{"Key": key} for _, _, key in self._listed(f)]
        for start in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start:start + 1000],
                                                              "Quiet": True})
