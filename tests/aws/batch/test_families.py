"""FLUX.1, SD 3.5 and FLUX.2 Klein generating on the scale-out (moto Batch, job containers on this
engine; the harness and its gaps: test_end_to_end.py). One deployment, three runs of the real
`sdtui --no-ui --option batch`, one model each and one shard each (arrays: test_end_to_end.py),
held as ComfyUI users hold them:

- FLUX.1 [dev]: a split set whose transformer is a GGUF, given as that file inside its folder
  (its siblings travel to the bucket root beside it), with its distilled guidance; two prompts;
- SD 3.5: a split set given as its folder (Stability's file with the VAE inside, the two CLIPs,
  T5 in fp8), with CFG and a negative prompt;
- FLUX.2 Klein: a split set given as its transformer file.

Each shard copies the set from moto S3 and loads it with the worker's loader; the client
downloads the PNGs, whose params name the family, the settings and the transformer's sha256."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sdtui.modelfiles import sha256_file
from sdtui.outputs import read_metadata

from .test_end_to_end import (  # noqa: F401 (moto_url: a fixture)
    bridge_moto_gaps,
    moto_url,
    remove_ecr_tags,
    sdtui,
    tagged_leftovers,
    wait_until,
)


@pytest.fixture(scope="module")
def sets(tmp_path_factory, tiny_sd3, tiny_klein) -> dict[str, Path]:
    """Each family's transformer file (the set's folder is its parent)."""
    from tests.helpers_sd3_files import family_sets

    return family_sets(tmp_path_factory.mktemp("family-sets"), tiny_sd3, tiny_klein)


def shard_log(batch, job_id: str) -> str:
    """What the shard wrote, from moto's CloudWatch Logs (moto gives no status reason)."""
    import boto3

    stream = batch.describe_jobs(jobs=[job_id])["jobs"][0]["container"].get("logStreamName")
    if not stream:
        return "(none)"
    events = boto3.client("logs").get_log_events(logGroupName="/aws/batch/job",
                                                  logStreamName=stream)["events"]
    return "\n".join(e["message"] for e in events[-20:])


# family -> (prompts, flags, what each image's params must hold)
RUNS = {
    "flux1": (["a red fox in snow", "a lighthouse at dusk"], ["--guidance", "5"],
              {"guidance": 5.0}),
    "sd3": (["a teapot on a table"], ["--cfg", "3", "--negative-prompt", "blurry"],
            {"cfg": 3.0, "negative_prompt": "blurry"}),
    "flux2-klein": (["a castle on a hill"], [], {}),
}


@pytest.mark.docker
@pytest.mark.slow
def test_each_transformer_family_generates_on_the_scale_out(
        sets, worker_image, docker_client, aws, tmp_path, monkeypatch):
    """The runs overlap as a user's may: each command is started once the one before has
    submitted its job (so provisioning, which each run repeats, never races)."""
    import boto3
    from conftest import OFFLINE_BASE

    name = f"families-{uuid.uuid4().hex[:6]}"
    bucket = f"sdtui-batch-{name}"
    batch, ecr = boto3.client("batch"), boto3.client("ecr")
    bridge_moto_gaps(monkeypatch)
    watchers: dict[str, tuple[subprocess.Popen, Path, Path]] = {}
    try:
        for family, (prompts, flags, _expected) in RUNS.items():
            transformer = sets[family]
            model = transformer.parent if family == "sd3" else transformer
            prompt_file = tmp_path / f"{family}.txt"
            prompt_file.write_text("\n".join(prompts) + "\n")
            events, log = tmp_path / f"{family}.jsonl", tmp_path / f"{family}.log"
            with open(events, "w") as out, open(log, "w") as err:
                watcher = subprocess.Popen(
                    [sys.executable, "-m", "sdtui", "--no-ui", "--option", "batch", "--name",
                     name, "--bucket", bucket, "--model", str(model), "--base-image",
                     OFFLINE_BASE, "--steps", "2", "--width", "64", "--height", "64", "--seed",
                     "7", "--out", str(tmp_path / "out" / family), "--prompt-file",
                     str(prompt_file), "--json", *flags], stdout=out, stderr=err, text=True)
            watchers[family] = watcher, events, log
            wait_until(lambda w=watcher, e=events: w.poll() is not None
                       or '"event": "submitted"' in e.read_text(), f"{family}'s job")

        for family, (prompts, _flags, expected) in RUNS.items():
            watcher, events, log = watchers[family]
            code = watcher.wait(timeout=600)
            found = [json.loads(line) for line in events.read_text().splitlines()]
            job = next(e["job_id"] for e in found if e["event"] == "submitted")
            assert code == 0, (
                f"{family}: {log.read_text()}\nthe shard's log:\n{shard_log(batch, job)}")
            saved = [Path(e["path"]) for e in found if e["event"] == "image"]
            assert sorted(saved) == sorted((tmp_path / "out" / family).glob("*.png")), family
            assert sorted(read_metadata(p)["params"]["prompt"] for p in saved) == sorted(prompts)
            for path in saved:
                params = read_metadata(path)["params"]
                assert params["family"] == family, params
                assert params["steps"] == 2 and params["seed"] == 7, params
                assert (params["width"], params["height"]) == (64, 64), params
                assert {k: params.get(k) for k in expected} == expected, params
                # the shard's copy of the transformer, hashed as Option B hashes it
                assert params["model_sha256"] == sha256_file(sets[family]), params

        down = sdtui(name, "--teardown", "--purge-bucket")
        assert down.returncode == 0, down.stderr
        assert tagged_leftovers(aws, batch, ecr, name) == []
        assert bucket not in [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]]
    finally:
        for watcher, _events, _log in watchers.values():
            if watcher.poll() is None:
                watcher.kill()
        remove_ecr_tags(docker_client, name)
