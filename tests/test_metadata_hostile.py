"""Malformed and hostile files through the real CLI: `sdtui --no-ui --from-png FILE` answers each
with exit 2 and one line, never a traceback, and its memory stays bounded (the child's peak
RSS, from the kernel, against the same command on an ordinary file). The time bound is
structural: the decompressor's output limit, the chunk-count limit and the linear settings
scanner (tests/test_metadata_read.py); bench/bench_metadata.py measures the times."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from sdtui.metadata.png_chunks import SIGNATURE, chunks, make_chunk
from sdtui.outputs import save_image

SDTUI = str(Path(sys.executable).parent / "sdtui")
MEMORY_BOUND = 100 * 1024 * 1024


def plain_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def with_chunks(*extra: bytes, png: bytes | None = None) -> bytes:
    """A valid PNG with raw chunks inserted after IHDR."""
    png = png or plain_png()
    first = next(chunks(png))
    return png[: first.end] + b"".join(extra) + png[first.end :]


def text(key: str, value: str) -> bytes:
    return make_chunk(b"tEXt", key.encode() + b"\0" + value.encode("latin-1"))


def ztxt(key: str, compressed: bytes, method: int = 0) -> bytes:
    return make_chunk(b"zTXt", key.encode() + b"\0" + bytes([method]) + compressed)


def itxt(key: str, body: bytes) -> bytes:
    return make_chunk(b"iTXt", key.encode() + b"\0" + body)


def bomb(gib: int = 1) -> bytes:
    """About 1 MB of deflate that inflates to `gib` GiB of zeros."""
    deflate, zeros = zlib.compressobj(9), bytes(1 << 20)
    return b"".join([*(deflate.compress(zeros) for _ in range(1024 * gib)), deflate.flush()])


def bad_crc(png: bytes, kind: bytes) -> bytes:
    chunk = next(c for c in chunks(png) if c.kind == kind)
    return png[: chunk.end - 4] + struct.pack(">I", 0xDEADBEEF) + png[chunk.end :]


def sd_metadata(value) -> bytes:
    return with_chunks(text("sd-metadata", json.dumps(value)))


SETTINGS = "x\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64"


DEEP_JSON = "[" * 100_000 + "]" * 100_000
GOOD_ZTXT = zlib.compress(b"a cat\n" + SETTINGS.encode())

# Each case: a name and how to build its file (bytes), or a path relative to the test folder.
CASES = {
    "empty file": lambda: b"",
    "signature only": lambda: SIGNATURE,
    "truncated header": lambda: SIGNATURE + b"\0\0\0\x0dIH",
    "truncated in IDAT": lambda: plain_png()[:-20],
    "no IEND": lambda: plain_png()[:-12],
    "JPEG": lambda: b"\xff\xd8\xff\xe0" + b"\0" * 64,
    "text file": lambda: b"Steps: 20, Sampler: Euler\n",
    "bad CRC in a text chunk": lambda: bad_crc(with_chunks(text("parameters", SETTINGS)),
                                               b"tEXt"),
    "bad CRC in IDAT": lambda: bad_crc(plain_png(), b"IDAT"),
    "huge length field": lambda: with_chunks(struct.pack(">I", 0xFFFFFFF0) + b"tEXtkey\0"),
    "length over 2^31": lambda: with_chunks(struct.pack(">I", 0x80000001) + b"tEXtkey\0"),
    "no metadata": plain_png,
    "corrupt zTXt": lambda: with_chunks(ztxt("parameters", b"\x78\x9c" + b"\xff" * 40)),
    "cut-off zTXt": lambda: with_chunks(ztxt("parameters", GOOD_ZTXT[:-6])),
    "zTXt with an unknown method": lambda: with_chunks(ztxt("parameters", GOOD_ZTXT, 7)),
    "zTXt compression bomb (1 GiB)": lambda: with_chunks(ztxt("parameters", BOMB())),
    "iTXt compression bomb (1 GiB)": lambda: with_chunks(
        itxt("sd-metadata", b"\1\0\0\0" + BOMB())),
    "corrupt iTXt": lambda: with_chunks(itxt("parameters", b"\1\0\0\0\x78\x9c\x01\x02")),
    "iTXt with only a keyword": lambda: with_chunks(itxt("parameters", b"")),
    "iTXt that is not UTF-8": lambda: with_chunks(itxt("parameters", b"\0\0\0\0\xff\xfe")),
    "tEXt without a keyword end": lambda: with_chunks(make_chunk(b"tEXt", b"k" * 200)),
    "2 MiB tEXt": lambda: with_chunks(text("parameters", "a" * (2 << 20))),
    "1 MiB sd-metadata": lambda: sd_metadata({"x": "a" * (1 << 20)}),
    "300 KiB sd-metadata of tiny strings": lambda: sd_metadata(["a"] * 60_000),
    "900 KiB settings line of pairs": lambda: with_chunks(text(
        "parameters", "x\nSteps: 20, Sampler: Euler, Seed: 1, " + "k: v, " * 150_000)),
    "200 KB settings line of words": lambda: with_chunks(text(
        "parameters", "x\nSteps: 20, Sampler: UniPC, Seed: 1, " + "word " * 40_000)),
    "200 KB settings value": lambda: with_chunks(text(
        "parameters", "x\nSteps: 20, Sampler: Euler, Seed: " + "1" * 200_000)),
    "200 KB of open quotes": lambda: with_chunks(text(
        "parameters", "x\nSteps: 1, Seed: 2, Size: 8x8, " + 'k: "a, ' * 25_000)),
    "a quoted value with a bad JSON escape": lambda: with_chunks(text(
        "parameters", 'x\nSteps: 20, Sampler: "Eu\\ler", Seed: 1')),
    "sd-metadata that is not JSON": lambda: with_chunks(text("sd-metadata", "{'not': json")),
    "sd-metadata nested 100,000 deep": lambda: with_chunks(text("sd-metadata", DEEP_JSON)),
    "sd-metadata that is a list": lambda: sd_metadata([1, 2, 3]),
    "sdtui params that are a string": lambda: sd_metadata({"sdtui": {"params": "steps=20"}}),
    "sdtui params that are a list": lambda: sd_metadata({"sdtui": {"params": [1, 2]}}),
    "sdtui params of the wrong types": lambda: sd_metadata(
        {"sdtui": {"version": 2, "params": {"prompt": 5, "steps": "many"}}}),
    "dream image.steps a string": lambda: sd_metadata(
        {"image": {"prompt": [{"prompt": "a", "weight": 1}], "steps": "x", "seed": 1}}),
    "dream image.prompt a number": lambda: sd_metadata({"image": {"prompt": 5}}),
    "dream image a list": lambda: sd_metadata({"image": [1]}),
    "Dream command with a bad number": lambda: with_chunks(text("Dream", '"a cat" -s many')),
    "150,000 tiny chunks": lambda: with_chunks(*[make_chunk(b"tIME", b"1234567")] * 150_000),
    "33 MiB file": lambda: with_chunks(make_chunk(b"zzZz", bytes(33 << 20))),
    "a directory": lambda: Path("."),
    "a missing file": lambda: Path("missing.png"),
}
_BOMB: list[bytes] = []


def BOMB() -> bytes:  # noqa: N802 - built once, for both bomb cases
    if not _BOMB:
        _BOMB.append(bomb())
    return _BOMB[0]


# Runs a command in a grandchild and writes its peak RSS (wait4's ru_maxrss) to a file. Linux
# carries a process's peak over exec, and a child forked from the test process would start at
# the test process's size; a fork of this small launcher starts small.
MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    files: dict[str, Path] = {}
    for i, (name, build) in enumerate(CASES.items()):
        content = build()
        if isinstance(content, Path):
            files[name] = tmp / content
        else:
            files[name] = tmp / f"case-{i}.png"
            files[name].write_bytes(content)
    files["ordinary sdtui image"] = save_image(
        tmp / "out", plain_png(), {"prompt": "a cat", "seed": 1, "steps": 20, "cfg": 7.0,
                                   "width": 64, "height": 64, "scheduler": "euler_a"})

    def run(path: Path):
        rss_file = path.parent / f"{path.name}.rss"
        proc = subprocess.run(
            [sys.executable, "-c", MEASURE, str(rss_file), SDTUI, "--no-ui", "--from-png",
             str(path)], capture_output=True, timeout=120,  # a hang guard, not a time bound
            env={**os.environ, "SDTUI_CONFIG_DIR": str(tmp / "no-config")})
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode(), int(
            rss_file.read_text())

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(files, pool.map(run, files.values()), strict=True))


HOSTILE = list(CASES)


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_file_gets_one_line_and_exit_2(results, case):
    code, out, err, _ = results[case]
    assert "Traceback" not in err
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdtui: error: "), err
    assert " — " in lines[0]  # the fix comes with it


@pytest.mark.parametrize("case", HOSTILE)
def test_memory_stays_bounded(results, case):
    baseline = results["ordinary sdtui image"][3]
    assert results[case][3] - baseline < MEMORY_BOUND, (results[case][3], baseline)
