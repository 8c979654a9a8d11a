"""`sdtui --no-ui` refuses bad sampler, mask and LoRA input with one line and exit 2, before
anything is created."""

from __future__ import annotations

import cli_zygote

from tests.helpers_generation import INIT


def test_bad_generation_input_exits_2_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    INIT.save(tmp_path / "init.png")
    (tmp_path / "mask.txt").write_text("not an image")
    init = ["--init-image", str(tmp_path / "init.png")]
    cases = [
        (["--scheduler", "DPM++ 2S a Karras"], "sampler 'DPM++ 2S a' is not supported"),
        (["--scheduler", "DPM++ 2M", "--schedule", "Align Your Steps"], "is not supported"),
        (["--scheduler", "euler_a", "--schedule", "karras"], "euler_a has no karras schedule"),
        (["--mask", str(tmp_path / "init.png")], "needs the image it masks"),
        ([*init, "--mask", str(tmp_path / "missing.png")], "cannot read mask"),
        ([*init, "--mask", str(tmp_path / "mask.txt")], "mask.txt is not a PNG or JPEG image"),
        (["--prompt", "a fox <lora:a/b:1>"], "must be a file name in loras/"),
    ]
    for argv, needle in cases:
        if "--prompt" not in argv:
            argv = [*argv, "--prompt", "a fox"]
        r = cli_zygote.run(["--no-ui", "--model", str(tmp_path / "init.png"), *argv], text=True)
        assert r.returncode == 2, (argv, r.stderr)
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)
    assert not (tmp_path / "state").exists()


def test_the_loras_beside_the_model_travel_with_it(tmp_path):
    from sdtui.modelfiles import deployment_files
    from tests.helpers_models import write_fake_safetensors

    model = write_fake_safetensors(tmp_path / "model.safetensors")
    (tmp_path / "loras" / "people").mkdir(parents=True)
    write_fake_safetensors(tmp_path / "loras" / "style.safetensors")
    write_fake_safetensors(tmp_path / "loras" / "people" / "face.safetensors")
    (tmp_path / "loras" / "notes.txt").write_text("not a LoRA")
    names = [name for _, name in deployment_files([model])]
    assert names == ["model.safetensors", "loras/people/face.safetensors",
                     "loras/style.safetensors"]
