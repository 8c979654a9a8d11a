"""FLUX.2 Klein loads offline and generates through the real worker container (the CPU image's
locked dependency set: diffusers' Flux2 classes, transformers' Qwen3), on Option B with
`sdtui --no-ui`; what it cannot take is refused in one line, exit 2, nothing generated. The
folder is fetched by its catalogue name, `flux2-klein`, from the Hub stand-in holding the tiny
model behind the real repo's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from local_cli import events, labelled, one_line, throwaway_cli
from PIL import Image

from sdtui.fetch.catalogue import CATALOGUE
from sdtui.outputs import read_metadata
from tests.fetch.conftest import clean_env, hub  # noqa: F401 (a fixture)
from tests.fetch.standin import COMMIT, Hub

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_klein_on_option_b_with_no_ui(tmp_path, worker_image, docker_client, tiny_klein,
                                      hub: Hub):  # noqa: F811
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    repo = CATALOGUE["flux2-klein"].source.repo
    hub.add_folder(repo, tiny_klein["distilled"])
    with throwaway_cli(tmp_path, docker_client) as cli:
        cli.env.update(clean_env(hub, tmp_path), SDTUI_STATE_DIR=str(cli.state),
                       SDTUI_CONFIG_DIR=str(tmp_path / "config"))
        model = ["--model", "flux2-klein"]
        r = cli.run(*model, "--prompt", "a red barn", "--width", "64", "--height", "96",
                    "--seed", "7", "--json")
        assert r.returncode == 0, r.stderr
        (saved,) = [e["path"] for e in events(r.stdout) if e["event"] == "image"]
        assert Image.open(saved).size == (64, 96)
        meta = read_metadata(Path(saved))
        assert (meta["params"]["family"], meta["params"]["steps"]) == ("flux2-klein", 4)
        assert ("Steps: 4, Sampler: Euler, Schedule type: Simple, CFG scale: 1,"
                in meta["parameters"]) and "Family: flux2-klein" in meta["parameters"]
        assert meta["params"]["model_source"] == f"hf:{repo}@{COMMIT}"
        (index,) = (tmp_path / "models").rglob("model_index.json")  # the whole folder came
        assert sorted(p.relative_to(index.parent).as_posix() for p in index.parent.rglob("*")
                      if p.is_file()) == sorted(hub.repos[repo].files)
        for argv, needle in [
            (["--init-image", str(init)], "FLUX.2 Klein has no img2img"),
            (["--negative-prompt", "blurry"], "FLUX.2 Klein takes no negative prompt"),
        ]:
            r = cli.run(*model, "--prompt", "a red barn", "--width", "64", "--height", "64",
                        *argv)
            assert r.returncode == 2, (argv, r.stderr)
            assert needle in one_line(r.stderr), argv
        assert len(list(cli.out.glob("*.png"))) == 1
        assert len(labelled(docker_client, cli.name)[0]) == 1
