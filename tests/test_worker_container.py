"""The worker inside a real container built from Dockerfile.local, over the SDK attach socket."""

from __future__ import annotations

import contextlib
import io
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from docker.types import Mount
from PIL import Image

from sdtui.client import decode_png
from sdtui.deploy import model_copy, worker_container
from sdtui.errors import WorkerDied
from sdtui.modelfiles import model_files

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@contextlib.contextmanager
def model_volume(docker_client, image, files):
    """A fresh volume holding `files` ((source, name) pairs), removed afterwards with every
    test worker container."""
    name = f"sdtui-test-{uuid.uuid4().hex[:6]}"
    docker_client.volumes.create(name)
    try:
        with model_copy.VolumeCopier(docker_client, name, image, {}) as copier:
            copier.copy(model_copy.describe(files), {}, lambda n: None)
        yield name
    finally:
        # Only this volume's test workers: the engine is shared with other test runs.
        for c in docker_client.containers.list(
                all=True, filters={"label": "sdtui.test=container", "volume": name}):
            c.remove(force=True)
        docker_client.volumes.get(name).remove(force=True)


@pytest.fixture(scope="module")
def volume(docker_client, worker_image, tiny_models, tmp_path_factory):
    """One volume holding all three tiny formats and a corrupt checkpoint."""
    bad = tmp_path_factory.mktemp("bad") / "broken.ckpt"
    with zipfile.ZipFile(bad, "w") as zf:  # looks like a torch zip, holds nonsense
        zf.writestr("broken/data.pkl", b"\x80\x02garbage")
    files = [f for path in (*tiny_models.values(), bad) for f in model_files(path)]
    with model_volume(docker_client, worker_image, files) as name:
        yield name


def create_worker(docker_client, image, volume, model, **spec_args):
    spec = worker_container.WorkerSpec(
        deployment=f"wc-{uuid.uuid4().hex[:6]}", image=image, model=f"/data/{model}",
        data_mount=Mount("/data", volume, type="volume", read_only=True),
        extra_labels={"sdtui.test": "container"}, **spec_args,
    )
    return worker_container.create_worker(docker_client, spec)


def start_worker(docker_client, image, volume, model, **spec_args):
    container = create_worker(docker_client, image, volume, model, **spec_args)
    return container, worker_container.attach(container)


FORMATS = ("diffusers", "ckpt", "safetensors")


@pytest.fixture(scope="module")
def format_workers(docker_client, worker_image, volume, tiny_models):
    """A worker container for each format, started side by side (a start is mostly Python's
    imports, on one core); the volume's clean-up removes them all even if one start fails."""
    with ThreadPoolExecutor(len(FORMATS)) as pool:
        started = dict(zip(FORMATS, pool.map(
            lambda fmt: start_worker(docker_client, worker_image, volume,
                                     tiny_models[fmt].name), FORMATS), strict=True))
    yield started
    for container, client in started.values():
        client.close()
        container.remove(force=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_model_format_generates_in_the_container(format_workers, fmt):
    container, client = format_workers[fmt]
    assert client.ready["format"] == fmt and client.ready["device"] == "cpu"
    events = list(client.generate(prompt="a tiny castle", seed=5, steps=4, width=64,
                                  height=96, preview_every=2))
    kinds = {e["type"] for e in events}
    assert {"progress", "preview", "image", "done"} <= kinds
    image = next(e for e in events if e["type"] == "image")
    png = Image.open(io.BytesIO(decode_png(image)))
    assert png.format == "PNG" and png.size == (64, 96)
    top = container.top()
    assert all(row[0] != "root" for row in top["Processes"]), "the worker must not be root"


def test_a_corrupt_checkpoint_is_model_invalid_through_the_container(docker_client, worker_image,
                                                                    volume):
    with pytest.raises(WorkerDied) as info:
        start_worker(docker_client, worker_image, volume, "broken.ckpt")
    assert "/data/broken.ckpt" in str(info.value)
    (container,) = docker_client.containers.list(
        all=True, filters={"label": ["sdtui.test=container", "sdtui.model=/data/broken.ckpt"]})
    assert container.wait(timeout=60)["StatusCode"] != 0


def test_an_oom_killed_worker_says_so_with_its_memory_limit(docker_client, worker_image, volume,
                                                            tiny_models):
    with pytest.raises(WorkerDied) as info:
        start_worker(docker_client, worker_image, volume, tiny_models["ckpt"].name,
                     mem_limit="96m")
    assert "OOM-killed (memory limit 0.1 GiB)" in str(info.value)


def test_a_stop_while_the_worker_starts_is_a_clean_stop(docker_client, worker_image, volume,
                                                        tiny_models):
    """`docker stop` at once after the start, while Python starts and loads the model: the
    worker leaves with 143 (stopped), never ignored until docker's SIGKILL (137, reported as
    killed). The grace is long, so a SIGTERM that was ignored ends in a SIGKILL, not a 143."""
    container = create_worker(docker_client, worker_image, volume, tiny_models["ckpt"].name)
    container.start()
    container.stop(timeout=60)
    assert container.wait(timeout=60)["StatusCode"] == 143
    assert "the worker was stopped" in worker_container.diagnose(container).message
