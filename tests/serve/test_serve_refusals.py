"""`sdtui serve`'s refusals that need no deployment: an open port, malformed credentials, no
deployment to serve; and the one behaviour each A1111 field gets, as the README's table says."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import cli_zygote
import pytest

from sdtui.serve.fields import IGNORED, IMG2IMG, MAPPED, REFUSED, TXT2IMG, FieldError, translate

README = Path(__file__).resolve().parents[2] / "README.md"


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"SDTUI_STATE_DIR": str(tmp_path / "state"), "SDTUI_CONFIG_DIR": str(tmp_path / "cfg"),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return cli_zygote.run(["serve", "--out", str(tmp_path / "out"), *args], env=env, text=True,
                          timeout=60)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("sdtui: error: ")
    return line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "192.168.1.10"])
def test_listening_beyond_this_machine_without_api_auth_is_refused(tmp_path, listen):
    port = free_port()
    r = serve(tmp_path, "--listen", listen, "--port", str(port))
    assert r.returncode == 2
    line = one_error_line(r)
    assert f"--listen {listen}" in line and "--api-auth USER:PASS" in line
    # nothing was opened, and nothing written to the state dir
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


@pytest.mark.parametrize("auth", ["nopassword", "user:", ":pass", "a:b,c"])
def test_a_malformed_api_auth_is_one_line(tmp_path, auth):
    r = serve(tmp_path, "--listen", "0.0.0.0", "--api-auth", auth)
    assert r.returncode == 2
    assert "--api-auth" in one_error_line(r) and "USER:PASS" in r.stderr


def test_serving_a_deployment_that_does_not_exist_says_how_to_make_one(tmp_path):
    r = serve(tmp_path, "--name", "nothing-here", "--port", str(free_port()))
    assert r.returncode == 2
    line = one_error_line(r)
    assert "'nothing-here'" in line and "sdtui --no-ui --model" in line


@pytest.mark.parametrize("content", [b'{"schema": 1, "requests": [{"rid": "a1-1", "rou',
                                     b'\xff\xfe{}', b'{"schema": 1, "requests": [{"rid": 7}]}'])
def test_a_damaged_queue_file_is_one_line_before_the_port_is_opened(tmp_path, content):
    state = tmp_path / "state"
    (state / "deployments").mkdir(parents=True)
    (state / "deployments" / "kept.json").write_text(json.dumps(
        {"schema": 1, "name": "kept", "option": "local", "resources": []}))
    queue = state / "serve" / "kept.json"
    queue.parent.mkdir()
    queue.write_bytes(content)
    port = free_port()
    r = serve(tmp_path, "--name", "kept", "--port", str(port))
    assert r.returncode == 2
    line = one_error_line(r)
    assert f"the API queue file {queue} is damaged" in line and "delete it" in line
    assert queue.read_bytes() == content  # kept as it was: the user decides
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


# --- fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "enable_hr": True}, "enable_hr"),
    ({"prompt": "x", "alwayson_scripts": {"controlnet": {"args": []}}}, "alwayson_scripts"),
    ({"prompt": "x", "refiner_checkpoint": "sdxl_refiner"}, "refiner_checkpoint"),
    ({"prompt": "x", "script_name": "x/y/z plot"}, "script_name"),
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "cfg_scale": "high"}, "cfg_scale"),
    ({"prompt": "x", "batch_size": 8, "n_iter": 3}, "batch_size"),
    ({"prompt": "x", "sampler_name": "DPM adaptive"}, "sampler_name"),
    ({"prompt": ""}, "prompt"),
])
def test_a_field_sdtui_cannot_honour_is_refused_by_name(body, field):
    with pytest.raises(FieldError) as caught:
        translate("txt2img", body)
    assert caught.value.setting == field and field.split("_")[0] in str(caught.value)


def test_img2img_refuses_what_it_cannot_start_from():
    for body, field in [({"prompt": "x"}, "init_images"),
                        ({"prompt": "x", "init_images": ["aGk=", "aGk="]}, "init_images"),
                        ({"prompt": "x", "init_images": ["http://example.invalid/a.png"]},
                         "init_images"),
                        ({"prompt": "x", "init_images": ["aGk="], "resize_mode": 2},
                         "resize_mode"),
                        ({"prompt": "x", "init_images": ["aGk="], "inpainting_mask_invert": 1},
                         "inpainting_mask_invert")]:
        with pytest.raises(FieldError) as caught:
            translate("img2img", body)
        assert caught.value.setting == field


def test_ignored_fields_are_named_in_the_warnings_and_neutral_ones_are_not():
    t = translate("txt2img", {"prompt": "x", "eta": 0.67, "s_churn": 0.0, "mask_blur": 4,
                              "enable_hr": False, "hr_scale": 2, "foo": 1, "steps": 4})
    named = {w.split(":")[0] for w in t.warnings}
    assert named == {"eta", "foo", "mask_blur"}  # mask_blur is not a txt2img field
    assert t.params["steps"] == 4 and t.parameters["eta"] == 0.67
    assert t.parameters["steps"] == 4 and t.parameters["width"] == 512  # A1111's default


def test_parameters_echo_the_cfg_the_image_ran_at_when_the_body_leaves_it_out(tmp_path):
    """Left out, cfg_scale is the model's own (SD 1.x's 7.5, as the worker records it in the
    image's params and says in `ready`), not A1111's 7; a cfg_scale given is echoed as given."""
    from sdtui.serve.answers import Model, generation
    from sdtui.serve.queue import Job
    from sdtui.session import SavedImage

    model = Model({"model": "/data/tiny.safetensors", "default_cfg": 7.5})
    for body, ran, echoed in (({"prompt": "x"}, 7.5, 7.5),
                              ({"prompt": "x", "cfg_scale": 5}, 5.0, 5)):
        request = translate("txt2img", body)
        job = Job(request.params)
        job.images.append(SavedImage(tmp_path / "0.png", "r1", 0, 1,
                                     {**request.params, "cfg": ran}))
        answer = generation(job, request, model, send_images=False)
        assert (answer["parameters"]["cfg_scale"], json.loads(answer["info"])["cfg_scale"]) == (
            echoed, ran)
    interrupted = translate("txt2img", {"prompt": "x"})  # before its first image: none ran
    answer = generation(Job(interrupted.params), interrupted, model, send_images=False)
    assert answer["parameters"]["cfg_scale"] == 7.5


def test_a1111_spellings_become_the_request_sdtui_runs():
    t = translate("txt2img", {"prompt": "a fox", "negative_prompt": "blur", "steps": 12,
                              "cfg_scale": 5, "width": 64, "height": 96, "seed": 7,
                              "sampler_name": "DPM++ 2M", "scheduler": "Karras",
                              "batch_size": 2, "n_iter": 2, "subseed": 9,
                              "subseed_strength": 0.25})
    p = t.params
    assert (p["prompt"], p["negative_prompt"], p["steps"], p["cfg"], p["width"], p["height"],
            p["seed"], p["scheduler"], p["schedule"], p["count"], p["variation_seed"],
            p["variation_amount"]) == ("a fox", "blur", 12, 5.0, 64, 96, 7, "dpmpp_2m",
                                       "karras", 4, 9, 0.25)
    assert translate("txt2img", {"prompt": "x", "seed": -1}).params["seed"] is None


def test_sillytavern_s_normal_scheduler_runs_where_a1111_s_normal_is_reproduced():
    """SillyTavern's default Scheduler is A1111's "Normal" (tests/test_schedules_a1111.py
    checks which samplers sdtui reproduces it for). With DDIM (its default sampler) A1111
    applies no schedule type: ignored, and said."""
    euler = translate("txt2img", {"prompt": "x", "sampler_name": "Euler", "scheduler": "normal"})
    assert (euler.params["scheduler"], euler.params["schedule"], euler.warnings) == (
        "euler", "normal", [])
    ddim = translate("txt2img", {"prompt": "x", "sampler_name": "DDIM", "scheduler": "normal"})
    assert (ddim.params["scheduler"], ddim.params["schedule"]) == ("ddim", "default")
    assert ddim.warnings == ["scheduler: A1111 runs DDIM on its own timesteps, whatever the "
                             "schedule type; 'normal' ignored"]
    with pytest.raises(FieldError) as caught:
        translate("txt2img", {"prompt": "x", "sampler_name": "DPM++ 2M", "scheduler": "Normal"})
    assert caught.value.setting == "scheduler" and "A1111's Normal" in str(caught.value)


def test_the_readme_table_gives_every_field_its_one_behaviour():
    text = README.read_text()
    section = text[text.index("## Serving the A1111 API"):]
    rows = dict(re.findall(r"^\| `(\w+)` \| (mapped|refused|ignored)\b", section, re.M))
    for rules in (TXT2IMG, IMG2IMG):
        for name, rule in rules.items():
            if name == "denoising_strength":  # mapped for img2img, ignored for txt2img
                continue
            assert rows.get(name) == rule.policy, name
    assert {MAPPED, REFUSED, IGNORED} == set(rows.values())
