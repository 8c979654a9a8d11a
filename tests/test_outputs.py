"""Saving images: metadata a user's tools can read, untouched pixels, no lost or clobbered file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from sdtui import outputs
from sdtui.errors import EXIT_GENERATION, BadInput, GenerationError
from sdtui.metadata import png_chunks
from sdtui.outputs import OutputWriteError, read_index, read_metadata, save_image
from sdtui.paths import default_outputs_dir

PARAMS = {
    "prompt": "A lighthouse at dusk, oil painting",
    "negative_prompt": "blurry",
    "steps": 30,
    "cfg": 7.5,
    "width": 64,
    "height": 48,
    "seed": 123,
    "scheduler": "euler_a",
    "model": "/data/sd-v1-4.ckpt",
    "count": 1,
}


def png_bytes(width: int = 64, height: int = 48, noise: bool = False) -> bytes:
    if noise:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        image = Image.new("RGB", (width, height))
        image.putdata(
            [(x * 4 % 256, y * 5 % 256, (x + y) % 256) for y in range(height) for x in range(width)]
        )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def idat(data: bytes) -> bytes:
    return b"".join(bytes(c.data) for c in png_chunks.chunks(data) if c.kind == b"IDAT")


class FixedNow(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2024, 5, 6, 7, 8, 9, tzinfo=tz)


def test_saved_png_carries_a1111_parameters_and_sd_metadata(tmp_path: Path) -> None:
    path = save_image(tmp_path, png_bytes(), PARAMS)

    text = Image.open(path).text
    assert text["parameters"] == (
        "A lighthouse at dusk, oil painting\n"
        "Negative prompt: blurry\n"
        "Steps: 30, Sampler: Euler a, Schedule type: Uniform, CFG scale: 7.5, Seed: 123, "
        "Size: 64x48, Model: sd-v1-4"
    )
    meta = json.loads(text["sd-metadata"])
    assert meta["model_weights"] == "sd-v1-4"
    # The dream layout: the negative prompt in [brackets] after the prompt.
    assert meta["image"]["prompt"] == [
        {"prompt": "A lighthouse at dusk, oil painting [blurry]", "weight": 1.0}
    ]
    assert meta["image"]["sampler"] == "k_euler_a"
    assert (meta["image"]["steps"], meta["image"]["cfg_scale"], meta["image"]["seed"]) == (
        30,
        7.5,
        123,
    )
    assert meta["sdtui"]["params"] == PARAMS

    read = read_metadata(path)
    assert read["params"] == PARAMS
    assert read["parameters"] == text["parameters"]


def test_pixels_and_image_data_are_bit_identical(tmp_path: Path) -> None:
    original = png_bytes()
    path = save_image(tmp_path, original, PARAMS)

    saved = path.read_bytes()
    assert idat(saved) == idat(original)
    assert Image.open(path).tobytes() == Image.open(io.BytesIO(original)).tobytes()
    Image.open(path).verify()  # every chunk CRC is right


def test_text_is_readable_before_decoding_pixels(tmp_path: Path) -> None:
    # Tools like A1111's "PNG info" read Image.info right after open, without loading pixels.
    path = save_image(tmp_path, png_bytes(), PARAMS)
    assert "parameters" in Image.open(path).info


def test_non_latin_prompt_round_trips(tmp_path: Path) -> None:
    params = {**PARAMS, "prompt": "桜の木の下の猫 — 🐱", "negative_prompt": ""}
    path = save_image(tmp_path, png_bytes(), params)

    assert Image.open(path).text["parameters"].startswith("桜の木の下の猫 — 🐱\nSteps: 30")
    assert read_metadata(path)["params"]["prompt"] == "桜の木の下の猫 — 🐱"


def test_existing_metadata_chunks_are_replaced_not_duplicated(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "stale")
    info.add_text("Software", "worker")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)

    path = save_image(tmp_path, buffer.getvalue(), PARAMS)

    _, keywords = png_chunks.read_texts(path.read_bytes(), ())
    assert keywords.count("parameters") == 1
    assert Image.open(path).text["Software"] == "worker"
    assert Image.open(path).text["parameters"] != "stale"


def test_name_has_time_seed_and_prompt_slug(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(outputs, "datetime", FixedNow)
    params = {**PARAMS, "prompt": "  Ünïcode & Punctuation!!  " + "very long words " * 10}
    path = save_image(tmp_path, png_bytes(), params)

    assert path.name.startswith("20240506-070809-123-unicode-punctuation-very-long-words")
    slug = path.stem.split("-", 3)[3]
    assert len(slug) <= 40 and not slug.endswith("-")


def test_same_params_in_the_same_second_never_collide(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(outputs, "datetime", FixedNow)
    first = save_image(tmp_path, png_bytes(), PARAMS)
    second = save_image(tmp_path, png_bytes(), PARAMS)
    third = save_image(tmp_path, png_bytes(), PARAMS)

    assert first.name == "20240506-070809-123-a-lighthouse-at-dusk-oil-painting.png"
    assert second.name == "20240506-070809-123-a-lighthouse-at-dusk-oil-painting-1.png"
    assert third.name == "20240506-070809-123-a-lighthouse-at-dusk-oil-painting-2.png"
    assert {p.name for p in tmp_path.glob("*.png")} == {first.name, second.name, third.name}


SAVER = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from pathlib import Path
    from sdtui import outputs

    class FixedNow(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2024, 5, 6, 7, 8, 9, tzinfo=tz)

    outputs.datetime = FixedNow
    png = Path(sys.argv[2]).read_bytes()
    params = {"prompt": "race", "seed": 1, "steps": 1, "worker": sys.argv[3]}
    for i in range(int(sys.argv[4])):
        outputs.save_image(Path(sys.argv[1]), png, {**params, "i": i})
    """
)


def test_two_processes_saving_at_once_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    source = tmp_path / "in.png"
    source.write_bytes(png_bytes())
    per_process = 25
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, str(out), str(source), name, str(per_process)]
        )
        for name in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]

    files = sorted(out.glob("*.png"))
    assert len(files) == 2 * per_process
    saved = {(m["params"]["worker"], m["params"]["i"]) for m in map(read_metadata, files)}
    assert saved == {(w, i) for w in "ab" for i in range(per_process)}
    index = read_index(out)
    assert sorted(r["file"] for r in index) == [f.name for f in files]
    assert not list(out.glob(".sdtui-*"))


def test_index_gets_one_line_per_image_without_png(tmp_path: Path) -> None:
    first = save_image(tmp_path, png_bytes(), PARAMS)
    second = save_image(tmp_path, png_bytes(), {**PARAMS, "seed": 7, "png": "aGVsbG8="})

    lines = (tmp_path / "index.jsonl").read_text().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert [r["file"] for r in records] == [first.name, second.name]
    assert records[0]["params"] == PARAMS
    assert "png" not in records[1]["params"]
    assert datetime.fromisoformat(records[0]["time"]).tzinfo is not None
    assert "png" not in read_metadata(second)["params"]


def test_a_torn_last_index_line_does_not_swallow_the_next_image(tmp_path: Path) -> None:
    """A writer that died mid-line (power cut, kill -9 of another tool) leaves half a line with
    no newline: the next image's line starts on a fresh line, so every image stays findable."""
    first = save_image(tmp_path, png_bytes(), PARAMS, {"request": "r1", "index": 0})
    with open(tmp_path / "index.jsonl", "ab") as index:
        index.write(b'{"request": "r1", "index": 1, "file": "half')
    second = save_image(tmp_path, png_bytes(), {**PARAMS, "seed": 8},
                        {"request": "r2", "index": 0})

    assert [r["file"] for r in read_index(tmp_path)] == [first.name, second.name]
    assert outputs.find_saved(tmp_path, "r2", 0) == second


def test_out_dir_is_created(tmp_path: Path) -> None:
    path = save_image(tmp_path / "a" / "b", png_bytes(), PARAMS)
    assert path.parent == tmp_path / "a" / "b"


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs to fill up ({result.stderr.strip()}); needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_raises_and_keeps_what_was_saved(tiny_disk: Path) -> None:
    first = save_image(tiny_disk, png_bytes(), PARAMS)
    kept = first.read_bytes()
    index_before = (tiny_disk / "index.jsonl").read_bytes()

    with pytest.raises(OutputWriteError) as caught:
        save_image(tiny_disk, png_bytes(256, 256, noise=True), {**PARAMS, "seed": 9})

    error = caught.value
    assert isinstance(error, GenerationError) and error.exit_code == EXIT_GENERATION
    assert str(tiny_disk) in str(error) and "No space left" in str(error)
    assert "--out" in (error.fix or "") and "\n" not in str(error)
    assert first.read_bytes() == kept
    assert (tiny_disk / "index.jsonl").read_bytes() == index_before
    assert sorted(p.name for p in tiny_disk.iterdir()) == sorted([first.name, "index.jsonl"])


def test_index_write_failure_removes_the_image_it_belonged_to(tmp_path: Path, monkeypatch) -> None:
    # Image and index line are saved together or not at all, so the caller can safely
    # leave the image unacknowledged and fetch it again.
    kept = save_image(tmp_path, png_bytes(), PARAMS)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "_append_index", full)
    with pytest.raises(OutputWriteError, match="No space left"):
        save_image(tmp_path, png_bytes(), {**PARAMS, "seed": 5})

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kept.name, "index.jsonl"])


def test_out_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("not a dir")
    with pytest.raises(OutputWriteError, match=str(blocker)):
        save_image(blocker, png_bytes(), PARAMS)
    assert blocker.read_text() == "not a dir"


def test_broken_png_from_worker_is_a_generation_error(tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match="broken PNG"):
        save_image(tmp_path, b"not a png", PARAMS)
    with pytest.raises(GenerationError, match="broken PNG"):
        save_image(tmp_path, png_bytes()[:-20], PARAMS)
    assert not list(tmp_path.iterdir())


def test_read_metadata_of_another_tools_png(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a cat\nNegative prompt: dog\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 42, Size: 512x768, Model: m1",
    )
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)

    params = read_metadata(path)["params"]
    assert params == {
        "prompt": "a cat",
        "negative_prompt": "dog",
        "steps": 20,
        "scheduler": "dpmpp_2m",
        "schedule": "karras",
        "cfg": 6.0,
        "seed": 42,
        "width": 512,
        "height": 768,
        "model": "m1",
    }


def test_read_metadata_of_png_without_parameters_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    path.write_bytes(png_bytes())
    with pytest.raises(BadInput, match="carries no generation parameters"):
        read_metadata(path)
    with pytest.raises(BadInput, match="cannot read"):
        read_metadata(tmp_path / "missing.png")


def test_default_outputs_dir_follows_the_users_pictures_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SDTUI_OUTPUTS_DIR", raising=False)
    for var in ("XDG_PICTURES_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_outputs_dir() == tmp_path / ".local/share/sdtui/outputs"

    (tmp_path / "Pictures").mkdir()
    assert default_outputs_dir() == tmp_path / "Pictures/sdtui"

    monkeypatch.setenv("SDTUI_OUTPUTS_DIR", str(tmp_path / "elsewhere"))
    assert default_outputs_dir() == tmp_path / "elsewhere"
