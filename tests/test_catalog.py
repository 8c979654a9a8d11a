"""The outputs dir as the gallery's catalogue: a deployment's images from index.jsonl, and
deleting one removes its file and its index line and nothing else."""

from __future__ import annotations

import io
import json
import multiprocessing
from pathlib import Path

import pytest
from PIL import Image

from sdtui.catalog import delete_image, images_of
from sdtui.errors import SdtuiError
from sdtui.outputs import INDEX_NAME, read_index, save_image


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    return buf.getvalue()


def params(seed: int) -> dict:
    return {"prompt": f"cat {seed}", "seed": seed, "steps": 4, "width": 64, "height": 64}


def test_a_deployments_images_come_from_the_index(tmp_path: Path) -> None:
    mine = [save_image(tmp_path, png(), params(s), {"deployment": "box"}) for s in (1, 2)]
    save_image(tmp_path, png(), params(3), {"deployment": "other"})
    save_image(tmp_path, png(), params(4))  # written before images named their deployment
    found = images_of(tmp_path, "box")
    assert [i.path for i in found] == mine and [i.seed for i in found] == [1, 2]
    assert found[0].time and found[0].params["prompt"] == "cat 1"
    mine[0].unlink()  # deleted by hand: not shown
    assert [i.seed for i in images_of(tmp_path, "box")] == [2]


def test_delete_removes_the_file_and_its_line_only(tmp_path: Path) -> None:
    paths = [save_image(tmp_path, png(), params(s), {"deployment": "box"}) for s in (1, 2, 3)]
    (tmp_path / INDEX_NAME).open("a").write("not json\n")  # a damaged line is kept as it was
    delete_image(paths[1])
    assert not paths[1].exists() and paths[0].exists() and paths[2].exists()
    assert [r["params"]["seed"] for r in read_index(tmp_path)] == [1, 3]
    assert (tmp_path / INDEX_NAME).read_text().endswith("not json\n")
    assert not list(tmp_path.glob(".index-*"))


def test_delete_outside_an_outputs_dir_is_refused(tmp_path: Path) -> None:
    stray = tmp_path / "stray.png"
    stray.write_bytes(png())
    with pytest.raises(SdtuiError, match="not in an sdtui outputs dir"):
        delete_image(stray)
    assert stray.exists()


def _save_many(out_dir: str, start: int, count: int) -> None:
    for seed in range(start, start + count):
        save_image(Path(out_dir), png(), params(seed), {"deployment": "box"})


def test_no_index_line_is_lost_when_deleting_while_another_process_saves(tmp_path: Path
                                                                         ) -> None:
    first = [save_image(tmp_path, png(), params(s), {"deployment": "box"}) for s in range(60)]
    saver = multiprocessing.get_context("spawn").Process(target=_save_many,
                                                         args=(str(tmp_path), 1000, 60))
    saver.start()
    while saver.is_alive() and len(read_index(tmp_path)) == len(first):
        saver.join(0.01)  # until the other process is saving
    for path in first:  # each deletion replaces the index while the other process appends
        delete_image(path)
    saver.join(120)
    seeds = sorted(r["params"]["seed"] for r in read_index(tmp_path))
    assert seeds == list(range(1000, 1060))
    on_disk = {p.name for p in tmp_path.glob("*.png")}
    assert on_disk == {json.loads(line)["file"] for line in
                       (tmp_path / INDEX_NAME).read_text().splitlines()}
