"""Copy model files into a Docker volume through the SDK, streamed, skipping unchanged files.

A tar stream is generated chunk by chunk and sent with `put_archive` into a helper container
that has the volume mounted, so no file is ever held whole in memory. A manifest in the volume
(name, size, sha256) lets a second run skip what is already there.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.types import Mount

from sdtui.modelfiles import sha256_file

MANIFEST = ".sdtui-manifest.json"
CHUNK = 1024 * 1024
WORKER_UID = 1000


@dataclass(frozen=True)
class ModelFile:
    source: Path
    name: str  # relative path inside the volume
    size: int
    sha256: str


def sha256_of(path: Path, cache: dict[str, dict] | None = None) -> str:
    """Hash a file once: a cache keyed by path, size and mtime spares re-reading gigabytes."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if cache is not None and key in cache:
        return cache[key]["sha256"]
    digest = sha256_file(path)
    if cache is not None:
        cache[key] = {"sha256": digest}
    return digest


def describe(files: list[tuple[Path, str]], hash_cache: dict | None = None) -> list[ModelFile]:
    return [ModelFile(src, name, src.stat().st_size, sha256_of(src, hash_cache))
            for src, name in files]


def _header(name: str, size: int, mode: int = 0o644) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(time.time())
    info.uid = info.gid = WORKER_UID
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _dirs_of(name: str) -> list[str]:
    parts = Path(name).parts[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def tar_stream(files: list[ModelFile], extra: dict[str, bytes],
               on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    """A tar archive of `files` plus small in-memory `extra` files, yielded in chunks."""
    seen_dirs: set[str] = set()
    for f in files:
        for d in _dirs_of(f.name):
            if d not in seen_dirs:
                seen_dirs.add(d)
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                info.uid = info.gid = WORKER_UID
                yield info.tobuf(format=tarfile.PAX_FORMAT)
        yield _header(f.name, f.size)
        sent = 0
        with f.source.open("rb") as fh:
            while block := fh.read(CHUNK):
                sent += len(block)
                on_bytes(len(block))
                yield block
        if sent != f.size:
            raise OSError(f"{f.source} changed while it was being copied")
        if f.size % tarfile.BLOCKSIZE:
            yield b"\0" * (tarfile.BLOCKSIZE - f.size % tarfile.BLOCKSIZE)
    for name, data in extra.items():
        yield _header(name, len(data))
        yield data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    yield b"\0" * (tarfile.BLOCKSIZE * 2)


class VolumeCopier:
    """Reads and writes one volume through a stopped helper container."""

    def __init__(self, client: docker.DockerClient, volume: str, image: str, labels: dict,
                 name: str | None = None) -> None:
        self.client = client
        self.helper = client.containers.create(
            image,
            name=name,
            entrypoint=["true"],
            mounts=[Mount("/data", volume, type="volume")],
            labels={**labels, "sdtui.role": "copy-helper"},
        )

    def __enter__(self) -> VolumeCopier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.helper.remove(force=True)

    def manifest(self) -> dict[str, dict]:
        try:
            chunks, _ = self.helper.get_archive(f"/data/{MANIFEST}")
        except docker.errors.NotFound:
            return {}
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(MANIFEST)
            return json.loads(member.read()) if member else {}

    def copy(self, files: list[ModelFile], manifest: dict[str, dict],
             on_bytes: Callable[[int], None]) -> None:
        # First the manifest without the files about to be written: a copy cut short (Ctrl-C,
        # a killed client, the engine going away) must never leave a half-written file that
        # the manifest vouches for.
        for f in files:
            manifest.pop(f.name, None)
        self._put(tar_stream([], self._manifest_file(manifest), lambda n: None))
        for f in files:
            manifest[f.name] = {"size": f.size, "sha256": f.sha256}
        # A generator body is sent with chunked encoding: nothing is held whole in memory.
        self._put(tar_stream(files, self._manifest_file(manifest), on_bytes))

    @staticmethod
    def _manifest_file(manifest: dict[str, dict]) -> dict[str, bytes]:
        return {MANIFEST: json.dumps(manifest, indent=1, sort_keys=True).encode()}

    def _put(self, archive: Iterator[bytes]) -> None:
        if not self.helper.put_archive("/data", archive):
            raise OSError("the Docker engine refused the model archive")


def changed(files: list[ModelFile], manifest: dict[str, dict]) -> list[ModelFile]:
    return [f for f in files
            if manifest.get(f.name) != {"size": f.size, "sha256": f.sha256}]


def total_size(files: list[ModelFile]) -> int:
    return sum(f.size for f in files)

