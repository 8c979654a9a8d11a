"""Option B end to end through the real Docker engine, the real worker image and the CLI."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from local_cli import (
    FAST,
    Cli,
    events,
    finished_by_worker,
    frozen,
    labelled,
    one_line,
    read_events,
    step_outcomes,
    throwaway_cli,
    wait_for,
)
from PIL import Image

from sdtui.errors import EXIT_DEPLOYMENT
from sdtui.modelfiles import sha256_file
from sdtui.outputs import read_index, read_metadata
from sdtui.worker import spool

pytestmark = [pytest.mark.docker, pytest.mark.slow]

@pytest.fixture(scope="module")
def cli(tmp_path_factory, worker_image, docker_client):
    with throwaway_cli(tmp_path_factory.mktemp("cli"), docker_client) as c:
        yield c


def test_first_run_provisions_everything_and_saves_two_images(cli, tiny_models, docker_client):
    r = cli.run("--model", str(tiny_models["ckpt"]), "--prompt", "a red barn", "-n", "2",
                "--seed", "42", *FAST, "--json")
    assert r.returncode == 0, r.stderr
    evs = events(r.stdout)
    outcomes = step_outcomes(evs)
    assert list(outcomes) == ["engine", "volume", "image", "models", "container", "attach"]
    assert outcomes["volume"] == outcomes["models"] == outcomes["container"] == "done"
    assert any(e["event"] == "step_progress" and e["step"] == "models" for e in evs)
    saved = [Path(e["path"]) for e in evs if e["event"] == "image"]
    assert len(saved) == 2 and all(p.parent == cli.out for p in saved)
    for path, seed in zip(saved, (42, 43), strict=True):
        assert Image.open(path).size == (64, 64)
        meta = read_metadata(path)
        assert meta["params"]["seed"] == seed and meta["params"]["prompt"] == "a red barn"
        assert f"Seed: {seed}" in meta["parameters"] and "Steps: 4" in meta["parameters"]
        # the checkpoint's sha256, hashed for the copy into the volume: A1111's 10 digits,
        # InvokeAI's whole hash
        sha = sha256_file(tiny_models["ckpt"])
        assert f"Model hash: {sha[:10]}," in meta["parameters"]
        assert meta["sd-metadata"]["model_hash"] == sha
    index = read_index(cli.out)
    assert sorted(line["params"]["seed"] for line in index) == [42, 43]
    # the sidecar config travelled with the checkpoint without being named
    containers, volumes = labelled(docker_client, cli.name)
    assert len(containers) == 1 and containers[0].status == "running"


def test_second_run_reuses_everything_without_reloading(cli, tiny_models, docker_client):
    (before,) = labelled(docker_client, cli.name)[0]
    r = cli.run("--prompt", "a blue barn", *FAST, "--json")
    assert r.returncode == 0, r.stderr
    evs = events(r.stdout)
    outcomes = step_outcomes(evs)
    assert outcomes == {"engine": "done", "volume": "skipped", "image": "skipped",
                        "models": "skipped", "container": "skipped", "attach": "done"}
    attach = next(e for e in evs if e["event"] == "step_finished" and e["step"] == "attach")
    assert "reattached, model already loaded" in attach["detail"]
    (after,) = labelled(docker_client, cli.name)[0]
    assert after.id == before.id
    assert docker_client.api.inspect_container(after.id)["RestartCount"] == 0
    assert len([e for e in evs if e["event"] == "image"]) == 1


def test_a_prompt_file_on_stdin_runs_one_request_per_line(cli):
    r = cli.run("--prompt-file", "-", *FAST, "--seed", "5", "--json",
                input="# a comment line\na green barn\n\na yellow barn\n")
    assert r.returncode == 0, r.stderr
    saved = [Path(e["path"]) for e in events(r.stdout) if e["event"] == "image"]
    assert [read_metadata(p)["params"]["prompt"] for p in saved] == ["a green barn",
                                                                    "a yellow barn"]


def test_a_killed_client_loses_no_finished_image(cli, tiny_models, docker_client):
    """SIGKILL mid-batch, then a run without a prompt: it adopts the request the worker is still
    running, follows it to the end and saves every image exactly once. The worker process is
    stopped (SIGSTOP) from the kill until the new run's question has reached its stdin, so the
    request is still running when it is asked about, however fast or slow this machine is."""
    killed = cli.popen("--model", str(tiny_models["ckpt"]), "--prompt", "a long batch", "-n",
                       "3", "--steps", "20", "--width", "64", "--height", "64", "--seed", "7",
                       "--json")
    for ev in read_events(killed):
        if ev["event"] == "progress" and ev["index"] == 1:
            rid = ev["id"]
            break
    killed.kill()
    killed.wait()
    (worker,) = labelled(docker_client, cli.name)[0]
    with frozen(worker) as waiting:
        rerun = cli.popen("--json")
        wait_for(waiting, unless=lambda: rerun.poll() is not None)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    seen = events(out)
    assert step_outcomes(seen)["container"] == "skipped"  # the same worker
    assert [e["id"] for e in seen if e["event"] == "adopted"] == [rid]
    assert any(e["event"] == "progress" and e["id"] == rid for e in seen)  # with progress
    assert [e["images"] for e in seen if e["event"] == "done" and e["id"] == rid] == [3]

    finished = sorted(key for key in finished_by_worker(worker) if key[0] == rid)
    saved = sorted((r["request"], r["index"]) for r in read_index(cli.out)
                   if r.get("request") == rid)
    assert finished == saved == [(rid, 0), (rid, 1), (rid, 2)]  # each on disk exactly once
    for record in read_index(cli.out):
        if record.get("request") == rid:
            params = read_metadata(cli.out / record["file"])["params"]
            assert (params["prompt"], params["seed"]) == ("a long batch", 7 + record["index"])
    assert list((cli.state / "worker-outputs" / cli.name / spool.DIR_NAME).iterdir()) == []


def test_a_third_client_never_adopts_a_live_clients_request(cli, tiny_models, docker_client):
    """A runs; B starts meanwhile (A holds the deployment: B saves only its own); A ends; C
    starts (with its own --out) while B's request runs. C may take over the deployment, but B
    is alive and owns its request: C neither adopts it nor saves any of its images, and each of
    B's images is saved exactly once, by B. The worker is stopped (SIGSTOP) while B, then C,
    start, until their first question has reached it, so A's request, then B's, still runs
    when they ask, however slow this machine is."""
    batch = ["--steps", "8", "--width", "64", "--height", "64", "--json"]
    a = cli.popen("--model", str(tiny_models["ckpt"]), "--prompt", "client a", "-n", "2",
                  *batch)
    next(ev for ev in read_events(a) if ev["event"] == "progress")
    (worker,) = labelled(docker_client, cli.name)[0]
    with frozen(worker) as waiting:
        b = cli.popen("--prompt", "client b", "-n", "4", *batch)
        wait_for(waiting, unless=lambda: b.poll() is not None)
    b_events = read_events(b)
    assert next(ev for ev in b_events if ev["event"] in ("other_client", "progress"))["event"] \
        == "other_client"
    a.communicate(timeout=900)
    assert a.returncode == 0
    rid = next(ev for ev in b_events if ev["event"] == "progress")["id"]

    c_cli = Cli(cli.root, cli.name, cli.volume, out=cli.root / "out-c")
    with frozen(worker) as waiting:
        c = c_cli.popen("--json")
        wait_for(waiting, unless=lambda: c.poll() is not None)
    c_out, c_err = c.communicate(timeout=900)
    b_rest, b_err = b.communicate(timeout=900)
    assert c.returncode == 0 and b.returncode == 0, c_err + b_err

    c_seen = events(c_out)
    assert not [e for e in c_seen if e["event"] in ("adopted", "image", "recovered")], c_seen
    assert [e["event"] for e in c_seen if e["event"] == "other_client"] == ["other_client"]
    assert [e["images"] for e in events(b_rest) if e["event"] == "done"] == [4]
    assert not [r for r in read_index(c_cli.out) if r.get("request") == rid]
    saved = sorted(r["index"] for r in read_index(cli.out) if r.get("request") == rid)
    assert saved == [0, 1, 2, 3]  # each once
    assert sorted(k for k in finished_by_worker(worker) if k[0] == rid) == \
        [(rid, i) for i in range(4)]


def test_ctrl_c_cancels_the_request_keeps_its_images_and_the_container(cli, docker_client):
    before = set(cli.out.glob("*.png"))
    proc = cli.popen("--prompt", "interrupted", "-n", "4", "--steps", "30", "--width", "64",
                     "--height", "64", "--json")
    images = 0
    for line in proc.stdout:
        if '"event": "image"' in line:
            images += 1
        if images == 1 and '"event": "progress"' in line and '"index": 1' in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    done = [e for e in events(rest) if e["event"] == "done"]
    assert done and done[-1]["cancelled"] is True and done[-1]["images"] >= 1
    assert len(set(cli.out.glob("*.png")) - before) == done[-1]["images"]
    (container,) = labelled(docker_client, cli.name)[0]
    assert container.status == "running"
    r = cli.run("--status")
    assert f"{cli.name} (local): ready" in r.stdout


def test_a_second_ctrl_c_leaves_at_once_without_waiting_for_the_worker(cli, docker_client):
    """The first Ctrl-C asks the worker to cancel; the second leaves without waiting for it.
    The worker process is stopped (SIGSTOP) in between, so a client that waited would never
    return."""
    proc = cli.popen("--prompt", "leave now", "-n", "4", "--steps", "150", "--width", "64",
                     "--height", "64", "--json")
    next(ev for ev in read_events(proc) if ev["event"] == "progress")
    (worker,) = labelled(docker_client, cli.name)[0]
    with frozen(worker):
        proc.send_signal(signal.SIGINT)
        assert "Ctrl-C again leaves now" in next(line for line in proc.stderr
                                                 if "cancelling" in line)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130  # bounded: the frozen worker never answers
    err = proc.stderr.read()
    assert "interrupted again: left without waiting for the worker" in one_line(err)


def test_status_lists_what_exists(cli):
    r = cli.run("--status")
    assert r.returncode == 0, r.stderr
    assert f"{cli.name} (local): ready" in r.stdout
    assert "container" in r.stdout and cli.volume in r.stdout


def test_bad_input_exits_2_and_creates_nothing(cli, tmp_path, docker_client):
    fresh = Cli(tmp_path, "t-bad", "sdtui-test-bad")
    notmodel = tmp_path / "notes.txt"
    notmodel.write_text("hello")
    cases = [
        (["--model", str(tmp_path / "nope.ckpt"), "--prompt", "x"], 2, "does not exist"),
        (["--model", str(notmodel), "--prompt", "x"], 2, "notes.txt"),
        (["--model", str(notmodel), "--prompt", "x", "--width", "65"], 2, "multiple of 8"),
        (["--prompt", "x", "--steps", "0"], 2, "steps must be from 1 to 150"),
        (["--prompt", "x", "--scheduler", "warp"], 2, "valid schedulers"),
    ]
    for argv, code, needle in cases:
        r = fresh.run(*argv)
        assert r.returncode == code, (argv, r.stderr)
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert labelled(docker_client, "t-bad") == ([], [])
    assert not (tmp_path / "state" / "deployments" / "t-bad.json").exists()


def test_no_engine_is_one_clear_line(tmp_path, tiny_models):
    fresh = Cli(tmp_path, "t-noengine", "sdtui-test-noengine")
    fresh.env["DOCKER_HOST"] = f"unix://{tmp_path}/no.sock"
    r = fresh.run("--model", str(tiny_models["ckpt"]), "--prompt", "x", *FAST)
    assert r.returncode == 3
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert "Docker" in line and "DOCKER_HOST" in line


def test_a_base_image_the_engine_cannot_get_is_refused_before_anything_is_created(
        tmp_path, tiny_models, docker_client):
    """Not here and its registry refuses: one line with the fix, before the volume is made."""
    missing = "127.0.0.1:9/none:1"
    with throwaway_cli(tmp_path, docker_client) as fresh:  # removes what a regression makes
        r = fresh.run("--model", str(tiny_models["ckpt"]), "--prompt", "x", *FAST,
                      "--base-image", missing)
        made = labelled(docker_client, fresh.name), docker_client.volumes.list(
            filters={"name": fresh.volume})
    assert r.returncode == EXIT_DEPLOYMENT, r.stderr
    line = one_line(r.stderr)
    assert f"base image {missing!r} is not on this engine and cannot be pulled" in line
    assert f"docker pull {missing}" in line and "--base-image NAME" in line
    assert made == (([], []), [])
    assert not (fresh.state / "deployments" / f"{fresh.name}.json").exists()
    assert "Build the worker image" not in r.stderr  # refused at the engine check


def test_teardown_purge_leaves_nothing_labelled(cli, docker_client):
    r = cli.run("--teardown", "--purge-volume")
    assert r.returncode == 0, r.stderr
    assert labelled(docker_client, cli.name) == ([], [])
    assert docker_client.volumes.list(filters={"name": cli.volume}) == []
    r = cli.run("--status")
    assert f"{cli.name} (local): absent" in r.stdout
