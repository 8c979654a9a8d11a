"""Sharding and seeding, run for real: the shard logic of the Batch child (sdtui.worker.batch)
against the tiny model in this process, with a folder standing in for the bucket. The pixels of
every line must not depend on how many shards ran the file, and a retried shard must not make
an image twice."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from sdtui import bucket_layout, sharding
from sdtui.outputs import read_metadata

RUN = "20250601-120000-abcd"


class FolderStore:
    """The child's bucket operations (keys, read, write) on a local folder; counts the puts."""

    def __init__(self, root: Path) -> None:
        self.root, self.bucket, self.writes = root, "folder", []

    def keys(self, prefix: str) -> set[str]:
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                if p.is_file() and p.relative_to(self.root).as_posix().startswith(prefix)}

    def read(self, key: str, limit: int) -> bytes:
        return (self.root / key).read_bytes()

    def write(self, key: str, data: bytes, content_type: str) -> None:
        self.writes.append(key)
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        (self.root / key).write_bytes(data)


@pytest.fixture(scope="module")
def sampler(tiny_models):
    from sdtui.worker.models import load_model
    from sdtui.worker.sampling import Sampler

    return Sampler(load_model(str(tiny_models["diffusers"]), device="cpu"))


def lines_for(prompts: list[str], **overrides) -> list[dict]:
    base = {"steps": 2, "width": 64, "height": 64, "scheduler": "euler_a"} | overrides
    return sharding.resolve([{"prompt": p, **base} for p in prompts], rng=random.Random(3))


def run_all_shards(lines, shards, sampler, root: Path) -> FolderStore:
    from sdtui.worker.batch import run_shard

    store = FolderStore(root)
    store.write(bucket_layout.prompts_key(RUN), sharding.encode_lines(lines), "x")
    decoded = sharding.decode_lines(store.read(bucket_layout.prompts_key(RUN), 1 << 30))
    for shard in range(shards):
        run_shard(run=RUN, lines=decoded, shard=shard, shards=shards, store=store,
                  sampler=sampler, scratch=root / f"scratch-{shard}")
    return store


def pixels(store: FolderStore, line: int, index: int) -> bytes:
    data = store.read(bucket_layout.image_key(RUN, line, index), 0)
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def test_pixels_do_not_depend_on_the_number_of_shards(sampler, tmp_path):
    lines = lines_for(["a red fox", "a lighthouse", "a teapot", "a cat", "a boat"])
    lines[1]["count"] = 2  # a line of two images: seeds seed, seed+1 whichever shard runs it
    stores = {w: run_all_shards(lines, w, sampler, tmp_path / f"w{w}") for w in (1, 2, 3)}
    images = [(n, j) for n, line in enumerate(lines) for j in range(line["count"])]
    for w, store in stores.items():
        assert bucket_layout.finished_images(RUN, store.keys("runs/")) == set(images), w
    for image in images:
        reference = pixels(stores[1], *image)
        assert pixels(stores[2], *image) == reference, image
        assert pixels(stores[3], *image) == reference, image
    # distinct lines really are distinct images (the comparison above can fail)
    assert pixels(stores[1], 0, 0) != pixels(stores[1], 2, 0)
    assert pixels(stores[1], 1, 0) != pixels(stores[1], 1, 1)


def test_each_image_carries_its_metadata_and_index_line(sampler, tmp_path):
    import json

    lines = lines_for(["a lighthouse at dusk"], seed=1234, negative_prompt="fog")
    store = run_all_shards(lines, 1, sampler, tmp_path)
    png = tmp_path / bucket_layout.image_key(RUN, 0, 0)
    params = read_metadata(png)["params"]
    assert (params["prompt"], params["seed"], params["negative_prompt"]) == (
        "a lighthouse at dusk", 1234, "fog")
    assert "Seed: 1234" in read_metadata(png)["parameters"]
    record = json.loads(store.read(bucket_layout.index_key(RUN, 0, 0), 0))
    assert record["params"]["seed"] == 1234 and record["shard"] == 0 and record["seconds"] > 0


def test_a_retried_shard_makes_only_what_is_missing(sampler, tmp_path):
    """A spot reclaim mid-shard: the retry skips finished images and makes the rest, down to
    the single image of a line of two."""
    from sdtui.worker.batch import run_shard

    lines = lines_for(["one", "two", "three", "four", "five"])
    lines[4]["count"] = 2
    store = run_all_shards(lines, 2, sampler, tmp_path)
    first = {k: store.read(k, 0) for k in store.keys(bucket_layout.out_prefix(RUN))}
    # the attempt "died" after line 0's image and the first image of line 4: line 2's outputs
    # and line 4's second image never landed
    lost = [(2, 0), (4, 1)]
    for line, index in lost:
        for key in (bucket_layout.image_key(RUN, line, index),
                    bucket_layout.index_key(RUN, line, index)):
            (tmp_path / key).unlink()
    store.writes.clear()
    made = run_shard(run=RUN, lines=lines, shard=0, shards=2, store=store, sampler=sampler,
                     scratch=tmp_path / "retry")
    assert made == 2
    # each PNG first, then the index line that marks it done; nothing finished is written again
    assert store.writes == [key for line, index in lost for key in (
        bucket_layout.image_key(RUN, line, index), bucket_layout.index_key(RUN, line, index))]
    again = {k: store.read(k, 0) for k in store.keys(bucket_layout.out_prefix(RUN))}
    assert again.keys() == first.keys()
    for line, index in lost:
        key = bucket_layout.image_key(RUN, line, index)
        assert pixels(store, line, index) == Image.open(io.BytesIO(first[key])).convert(
            "RGB").tobytes()
    # and a shard with nothing left does nothing at all
    store.writes.clear()
    assert run_shard(run=RUN, lines=lines, shard=1, shards=2, store=store, sampler=sampler,
                     scratch=tmp_path / "retry") == 0
    assert store.writes == []


def test_resolve_fixes_every_random_choice_once():
    lines = sharding.resolve([{"prompt": "a", "count": 3},
                              {"prompt": "b", "variation_amount": 0.3, "seed": 5}],
                             rng=random.Random(1))
    assert isinstance(lines[0]["seed"], int) and lines[0]["seed"] <= 2**32 - 1 - 3
    assert lines[1]["seed"] == 5 and isinstance(lines[1]["variation_seed"], int)
    assert all(line["preview_every"] == 0 for line in lines)
    assert sharding.decode_lines(sharding.encode_lines(lines)) == lines


def test_shards_cover_every_line_once():
    for total in (1, 5, 17):
        for shards in (1, 2, 3, 8):
            seen = sorted(n for i in range(shards) for n in sharding.shard_lines(total, i, shards))
            assert seen == list(range(total))
    assert sharding.images_per_shard([1, 2, 1, 1, 4], 2) == [6, 3]


@pytest.mark.parametrize("data, problem", [
    (b"", "0 lines"),
    (b"not json\n", "line 1 is not JSON"),
    (b"[1]\n", "not a JSON object"),
    (b'{"prompt": "x"}\n', "has no seed"),
    (b'{"prompt": "x", "seed": 1, "steps": 0}\n', "steps must be from 1 to 150"),
    (b'{"prompt": "x", "seed": 1, "evil": true}\n', "unknown field"),
])
def test_the_child_refuses_a_bad_prompts_file(data, problem):
    with pytest.raises(sharding.ShardingError, match=problem):
        sharding.decode_lines(data)


def test_the_shard_index_comes_from_batch_and_the_test_fallback_is_explicit():
    from sdtui.worker.batch import ChildError, shard_index

    assert shard_index(4, {"AWS_BATCH_JOB_ARRAY_INDEX": "3"}) == 3
    assert shard_index(1, {}) == 0  # W = 1 is a plain job: Batch sets no index
    with pytest.raises(ChildError, match="AWS_BATCH_JOB_ARRAY_INDEX is not set"):
        shard_index(2, {"AWS_BATCH_JOB_ID": "abc:1"})  # the job id alone is not trusted
    assert shard_index(2, {"AWS_BATCH_JOB_ID": "abc:1",
                           "SDTUI_TEST_ARRAY_INDEX_FROM_JOB_ID": "1"}) == 1
