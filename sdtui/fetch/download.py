"""Fetch a resolved set into the store: each file staged as `.staging/KEY.part`, resumed with
an HTTP Range request after anything that cut it short (a dropped connection, Ctrl-C, a killed
client), checked against its sha256 (or the hub's git blob id), and only then moved under the
name the model is read by. A file already in the store, under this set or another with the
same checksum, is never fetched again. Where the store's disk does not outlive the run (the
scale-out's job), its keeper keeps the partial file elsewhere and puts it back first
(bucket_partial)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from sdtui.errors import DeploymentError, Interrupted
from sdtui.fetch import civitai, hf
from sdtui.fetch.plan import RemoteFile, Resolved
from sdtui.fetch.progress import Meter
from sdtui.fetch.store import Store

CHUNK = 64 * 1024  # what a dropped connection can cost: the read it cut short
RETRIES = 5  # reconnects per file within one run; each resumes where the last one stopped
TIMEOUT = (30, 120)
# Who fetches, in each request's User-Agent: this machine, or the instance (`to_bucket`).
CLIENT_AGENT = "sdtui-fetch"


def margin(need: int) -> int:
    return 1024 * 1024 + need // 100


def _headers(f: RemoteFile) -> dict[str, str]:
    if f.auth == "civitai":
        return civitai.auth_headers()
    token = hf.token()
    return {"authorization": f"Bearer {token}"} if token else {}


def _refused(f: RemoteFile, response: requests.Response) -> Exception:
    if f.auth == "hf" and response.headers.get("X-Error-Code") == "GatedRepo":
        repo = f.url.split("/resolve/")[0].removeprefix(hf.endpoint() + "/")
        return hf.gated_line(repo)
    if f.auth == "civitai" and response.status_code in (401, 403):
        return DeploymentError(f"Civitai refused the download of {f.dest}",
                               fix=f"set {civitai.TOKEN_VAR} to an API key of your account")
    return DeploymentError(f"the download of {f.dest} failed: HTTP {response.status_code}",
                           fix="retry; the partial file is kept and the next run resumes it")


def _digest(path: Path, f: RemoteFile) -> str:
    if f.sha256:
        digest = hashlib.sha256()
    else:  # git's blob id: sha1 over "blob SIZE\0" and the content
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        while block := fh.read(4 * CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _transfer(store: Store, f: RemoteFile, part: Path, meter: Meter,
              cancel: threading.Event | None, agent: str) -> None:
    """One request from where the partial file ends; raises on a cut connection."""
    have = part.stat().st_size if part.exists() else 0
    if f.size is not None and have > f.size:
        have = 0
    headers = _headers(f) | {"user-agent": agent} | ({"range": f"bytes={have}-"} if have else {})
    with requests.get(f.url, headers=headers, stream=True, timeout=TIMEOUT) as response:
        if response.status_code == 416 and have:
            return  # the partial file is already whole
        if response.status_code not in (200, 206):
            raise _refused(f, response)
        if response.status_code == 200 and have:
            have = 0  # the server sent it all again
            if store.keeper is not None:
                store.keeper.restart(f)
        length = response.headers.get("content-length")
        total = have + int(length) if length and length.isdigit() else f.size
        with part.open("r+b" if have else "wb") as out:
            out.seek(have)
            out.truncate()
            for block in response.iter_content(CHUNK):
                out.write(block)
                have += len(block)
                if store.keeper is not None:
                    out.flush()
                    store.keeper.wrote(have)
                meter.update(f.dest, have, total)
                if cancel is not None and cancel.is_set():
                    raise Interrupted(f"the download of {f.dest} was interrupted",
                                      fix="run the same command again: it resumes")
        if total is not None and have < total:
            raise requests.ConnectionError(f"the connection closed at {have} of {total} bytes")


@contextlib.contextmanager
def _only_fetcher(store: Store, f: RemoteFile) -> Iterator[None]:
    """One process appends to a partial file at a time (the lock goes with the process)."""
    with store.part(f).with_suffix(".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeploymentError(f"another sdtui is fetching {f.dest} into {store.root}",
                                  fix="let it finish, then run again: the file is not fetched "
                                  "twice") from None
        yield


def fetch_file(store: Store, resolved: Resolved, f: RemoteFile, meter: Meter,
               cancel: threading.Event | None = None, *, agent: str = CLIENT_AGENT) -> None:
    store.staging.mkdir(parents=True, exist_ok=True)
    with _only_fetcher(store, f):
        if not store.has(resolved, f):  # another run may have finished it meanwhile
            _fetch_locked(store, resolved, f, meter, cancel, agent)


def _transfer_retrying(store: Store, f: RemoteFile, part: Path, meter: Meter,
                       cancel: threading.Event | None, agent: str) -> None:
    for attempt in range(RETRIES + 1):
        try:
            _transfer(store, f, part, meter, cancel, agent)
            return
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            if attempt == RETRIES:
                raise DeploymentError(f"the download of {f.dest} kept failing: {exc}",
                                      fix="run again: the next run resumes where it stopped") \
                    from None
            time.sleep(min(0.5 * 2 ** attempt, 8))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DeploymentError(
                    f"the disk filled up while fetching {f.dest} into {store.root}",
                    fix=store.space_fix + " and run again: it resumes") from None
            raise


def _fetch_locked(store: Store, resolved: Resolved, f: RemoteFile, meter: Meter,
                  cancel: threading.Event | None, agent: str) -> None:
    part = store.part(f)
    keeper = store.keeper
    if keeper is not None:
        keeper.restore(f, part)
    with keeper.keeping(f, part) if keeper is not None else contextlib.nullcontext():
        _transfer_retrying(store, f, part, meter, cancel, agent)
    got = _digest(part, f)
    want = f.sha256 or f.git_sha1
    if got != want:
        part.unlink(missing_ok=True)
        if keeper is not None:
            keeper.forget(f)
        raise DeploymentError(f"{f.dest} arrived corrupt (sha256 {got[:12]}…, expected "
                              f"{str(want)[:12]}…): the partial file was deleted and nothing "
                              "was loaded", fix="run again to fetch it anew")
    meter.update(f.dest, part.stat().st_size, part.stat().st_size, final=True)
    store.admit(resolved, f, part)


def missing(store: Store, resolved: Resolved) -> list[RemoteFile]:
    return [f for f in resolved.files if not store.has(resolved, f)]


def check_space(store: Store, files: list[RemoteFile]) -> None:
    """Before the first byte: room for what is left to fetch, plus a margin."""
    need = 0
    for f in files:
        part = store.part(f)
        need += max(0, (f.size or 0) - (part.stat().st_size if part.exists() else 0))
    store.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(store.root).free
    if free < need + margin(need):
        raise DeploymentError(
            f"not enough free space in {store.root} to fetch the model: {need / 2**20:.0f} MiB "
            f"needed (plus {margin(need) / 2**20:.0f} MiB margin), {free / 2**20:.0f} MiB free",
            fix=store.space_fix)


def fetch(store: Store, resolved: Resolved, meter: Meter,
          cancel: threading.Event | None = None) -> list[RemoteFile]:
    """Fetch what the store lacks of `resolved`; returns the files fetched."""
    todo = missing(store, resolved)
    check_space(store, todo)
    for f in todo:
        fetch_file(store, resolved, f, meter, cancel)
    return todo
