"""Every path a user gives, through the real `sdtui --no-ui`: a FIFO, a device or a huge file is
refused in one line with exit 2 (never a hang, never the whole file in memory), and so are a
`~user` that names no user and a damaged zip posing as a .ckpt. Nothing is created first."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.test_metadata_hostile import MEASURE

HANG_GUARD_S = 60  # a guard against the hang under test, not a time bound
MEMORY_BOUND = 200 * 1024 * 1024


def png(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def bad_zip(path: Path) -> Path:
    """Zeros and an end-of-central-directory record of one entry whose directory is cut off."""
    eocd = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, 10, 0, 0)
    path.write_bytes(bytes(32 - len(eocd)) + eocd)
    return path


def config_fifo(tmp: Path) -> list[str]:
    (tmp / "config").mkdir()
    fifo(tmp / "config" / "config.toml")
    return ["--prompt", "x"]


def sdtui(tmp: Path, *argv: str, config: str | None = None) -> tuple[int, str, int]:
    """Exit code, stderr and the child's peak RSS of one run with its own dirs."""
    config_dir = tmp / "config"
    config_dir.mkdir(exist_ok=True)
    if config is not None and not (config_dir / "config.toml").exists():
        (config_dir / "config.toml").write_text(config)
    env = {**os.environ, "SDTUI_STATE_DIR": str(tmp / "state"),
           "SDTUI_CONFIG_DIR": str(config_dir), "SDTUI_OUTPUTS_DIR": str(tmp / "out")}
    rss = tmp / "rss"
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(rss), sys.executable, "-m",
                           "sdtui", "--no-ui", *argv], capture_output=True, text=True, env=env,
                          timeout=HANG_GUARD_S, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stderr, int(rss.read_text())


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdtui: error: "), err
    for needle in needles:
        assert needle in lines[0], err


FIFO_CASES = {
    "--model x.ckpt": lambda t: ["--model", str(fifo(t / "x.ckpt")), "--prompt", "x"],
    "--model x.safetensors": lambda t: ["--model", str(fifo(t / "x.safetensors")),
                                        "--prompt", "x"],
    "--init-image": lambda t: ["--prompt", "x", "--init-image", str(fifo(t / "in.png"))],
    "--mask": lambda t: ["--prompt", "x", "--init-image", str(png(t / "in.png")),
                         "--mask", str(fifo(t / "mask.png"))],
    "--prompt-file": lambda t: ["--prompt-file", str(fifo(t / "prompts.txt"))],
    "--from-png": lambda t: ["--from-png", str(fifo(t / "saved.png"))],
    "config.toml": lambda t: config_fifo(t),
}


@pytest.mark.parametrize("case", list(FIFO_CASES))
def test_a_fifo_given_as_a_file_is_refused_without_blocking(tmp_path: Path, case: str) -> None:
    code, err, _ = sdtui(tmp_path, *FIFO_CASES[case](tmp_path))
    assert_one_line(code, err, "is a FIFO (named pipe), not a file")
    assert not (tmp_path / "state").exists()


def test_a_huge_init_image_is_refused_from_its_size_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    with huge.open("wb") as out:  # sparse: 2 GiB long, no disk used
        out.truncate(2 * 2**30)
    code, err, rss = sdtui(tmp_path, "--prompt", "x", "--init-image", str(huge))
    assert_one_line(code, err, "huge.png is larger than 32 MiB")
    assert rss < MEMORY_BOUND, rss


def test_a_device_is_refused_not_read_without_end(tmp_path: Path) -> None:
    code, err, rss = sdtui(tmp_path, "--prompt", "x", "--init-image", "/dev/zero")
    assert_one_line(code, err, "/dev/zero is a character device, not a file")
    assert rss < MEMORY_BOUND, rss


def test_a_folder_given_as_a_file_is_named(tmp_path: Path) -> None:
    code, err, _ = sdtui(tmp_path, "--prompt-file", str(tmp_path))
    assert_one_line(code, err, "is a folder, not a file")


def test_a_damaged_zip_posing_as_a_ckpt_is_one_line(tmp_path: Path) -> None:
    code, err, _ = sdtui(tmp_path, "--model", str(bad_zip(tmp_path / "badzip.ckpt")),
                         "--prompt", "x")
    assert_one_line(code, err, "badzip.ckpt is not a Stable Diffusion checkpoint")
    assert not (tmp_path / "state").exists()


NO_USER = "~sdtui-no-such-user-19/x"


@pytest.mark.parametrize("argv,config", [
    (["--model", f"{NO_USER}.ckpt", "--prompt", "x"], None),
    (["--prompt-file", NO_USER], None),
    (["--prompt", "x"], f'[generate]\nout_dir = "{NO_USER}"\n'),
    (["--prompt", "x"], f'[local]\nmodels = ["{NO_USER}.ckpt"]\n'),
], ids=["--model", "--prompt-file", "config out_dir", "config models"])
def test_a_home_of_no_user_is_bad_input(tmp_path: Path, argv: list[str],
                                        config: str | None) -> None:
    code, err, _ = sdtui(tmp_path, *argv, config=config)
    assert_one_line(code, err, "~sdtui-no-such-user-19 names no user on this machine")
