"""A FLUX.1, SD 3.5 or FLUX.2 Klein split set already in the bucket (what Option A uploaded),
resolved exactly as the worker resolves a local one: by `sdtui.modelfiles` on sparse stubs of
the key's folder, each file truncated to its real size with only its header fetched.

A header is fetched by ranged GETs as the parser reads it (a safetensors file's in one or two, a
GGUF's in a few growing ones), never past MAX_HEADER_BYTES: a file claiming more is refused.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path, PurePosixPath

from sdtui.errors import BadInput
from sdtui.headers import (
    MAX_SAFETENSORS_HEADER,
    NotGguf,
    gguf_architecture,
    gguf_tensor_names,
    safetensors_header,
)
from sdtui.modelfiles import CONFIG_DIR_SUFFIX, model_files
from sdtui.modelsets import TRANSFORMER_SUFFIXES, find_set, transformer_kind

# The most of a file the headers may take: a safetensors header's limit and its length prefix.
MAX_HEADER_BYTES = 8 + MAX_SAFETENSORS_HEADER
FIRST_READ = 256 * 1024  # a real header's size or more, so most take one GET


class _HeaderTooLarge(Exception):
    pass


class _Fetched(io.FileIO):
    """A sparse stub of a bucket object whose bytes are fetched, from the start, as far as a
    header parser reads them."""

    def __init__(self, path: Path, s3, bucket: str, key: str, size: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as stub:
            stub.truncate(size)
        super().__init__(path, "r+b")
        self.s3, self.bucket, self.key, self.size = s3, bucket, key, size
        self.have = 0

    def read(self, size: int | None = -1) -> bytes:
        start = self.tell()
        end = self.size if size is None or size < 0 else min(start + size, self.size)
        if end > self.have:
            if end > MAX_HEADER_BYTES:
                raise _HeaderTooLarge
            want = min(max(end, 2 * self.have, FIRST_READ), self.size, MAX_HEADER_BYTES)
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key,
                                      Range=f"bytes={self.have}-{want - 1}")["Body"].read()
            os.pwrite(self.fileno(), body, self.have)
            self.have += len(body)
        return super().read(size)


def _stub(root: Path, s3, bucket: str, key: str, size: int) -> Path:
    """`key` at root/key: a model file with its header, any other file empty."""
    path = root / key
    with _Fetched(path, s3, bucket, key, size) as stream:
        try:
            if path.suffix.lower() == ".gguf":
                gguf_architecture(stream)
                stream.seek(0)
                gguf_tensor_names(stream)
            elif path.suffix.lower() == ".safetensors":
                safetensors_header(stream)
        except NotGguf:
            pass  # the stub holds what was read; modelsets says what is wrong with it
        except _HeaderTooLarge:
            raise BadInput(f"s3://{bucket}/{key} has a header over {MAX_HEADER_BYTES} bytes, "
                           "which no model file has (corrupt?)",
                           fix="upload the file again with Option A") from None
    return path


def listed(s3, bucket: str, prefix: str, *, nested: bool = True
           ) -> tuple[list[tuple[str, int]], list[str]]:
    """(key, size) of the objects under `prefix`, and, not `nested`, only those directly in it
    with its sub-folders' prefixes."""
    files, folders = [], []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, **({} if nested else {"Delimiter": "/"}))
    for page in pages:
        files += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    return files, folders


def bucket_set(s3, bucket: str, key: str, size: int | None) -> list[tuple[str, int]] | None:
    """Every (key, size) of the set `key` names (its folder, or the transformer file among the
    parts; `size` None for a folder), keyed as Option A uploads it; None when it is no set;
    BadInput, in modelsets' words, when a part is missing or damaged."""
    if size is not None and not key.lower().endswith(TRANSFORMER_SUFFIXES):
        return None
    parent = str(PurePosixPath(key).parent)
    base = "" if parent == "." else parent + "/"  # Option A's names are relative to it
    folder = key + "/" if size is None else base
    with tempfile.TemporaryDirectory(prefix="sdtui-bucket-set-") as tmp:
        root = Path(tmp).resolve()
        sizes = {}
        if size is not None:  # its own header says whether it is a transformer, before any other
            sizes[key] = size
            if transformer_kind(_stub(root, s3, bucket, key, size)) is None:
                return None
        files, folders = listed(s3, bucket, folder, nested=False)
        for sidecar in folders:
            if sidecar.endswith(CONFIG_DIR_SUFFIX + "/"):
                files += listed(s3, bucket, sidecar)[0]
        for name, length in files:
            # a key no path can be (`a/../b`, `a//b`) is no part of a set: it stays out of the stubs
            if name not in sizes and all(p not in ("", ".", "..") for p in name.split("/")):
                sizes[name] = length
                _stub(root, s3, bucket, name, length)
        try:
            if find_set(root / key) is None:
                return None
            found = model_files(root / key)
        except BadInput as error:
            where = f"s3://{bucket}"
            raise BadInput(error.message.replace(str(root), where),
                           fix=error.fix and error.fix.replace(str(root), where)) from None
    return [(base + name, sizes[base + name]) for _path, name in found]
