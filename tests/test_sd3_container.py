"""An SD 3.5 diffusers folder loads offline and generates through the real worker container (the
CPU image's locked dependency set) with `sdtui --no-ui` on Option B, as FLUX.1 does
(tests/test_flux_container.py): CFG with a negative prompt, recorded as Forge records it, and
what SD 3.5 cannot take refused in one line before anything is generated. The folder is fetched
by its catalogue name, `sd35-medium`, from the Hub stand-in holding the tiny model behind the
real repo's name (gated, as the real one is)."""

from __future__ import annotations

from pathlib import Path

import pytest
from local_cli import events, labelled, one_line, throwaway_cli

from sdtui.fetch.catalogue import CATALOGUE
from sdtui.outputs import read_metadata
from tests.fetch.conftest import clean_env, hub  # noqa: F401 (a fixture)
from tests.fetch.standin import COMMIT, Hub

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_sd3_medium_on_option_b_with_no_ui(tmp_path, worker_image, docker_client, tiny_sd3,
                                           hub: Hub):  # noqa: F811
    repo = CATALOGUE["sd35-medium"].source.repo
    hub.add_folder(repo, tiny_sd3["medium"], gated=True)
    with throwaway_cli(tmp_path, docker_client) as cli:
        cli.env.update(clean_env(hub, tmp_path), SDTUI_STATE_DIR=str(cli.state),
                       SDTUI_CONFIG_DIR=str(tmp_path / "config"))
        model = ["--model", "sd35-medium"]
        # Gated: without a token, one line naming the licence page and HF_TOKEN, nothing made.
        r = cli.run(*model, "--prompt", "a red barn")
        assert r.returncode == 2, r.stderr
        assert f"{hub.url}/{repo}" in one_line(r.stderr) and "HF_TOKEN" in r.stderr
        assert not hub.served and labelled(docker_client, cli.name) == ([], [])
        cli.env["HF_TOKEN"] = hub.token
        r = cli.run(*model, "--prompt", "a red barn", "--negative-prompt", "fog", "--steps", "2",
                    "--width", "64", "--height", "64", "--cfg", "4", "--seed", "7", "--json")
        assert r.returncode == 0, r.stderr
        (saved,) = [e["path"] for e in events(r.stdout) if e["event"] == "image"]
        meta = read_metadata(Path(saved))
        params = meta["params"]
        assert (params["family"], params["cfg"], params["steps"]) == ("sd3", 4, 2)
        assert params["dtype"] == "float32" and params["negative_prompt"] == "fog"
        assert "Negative prompt: fog\nSteps: 2, Sampler: Euler, Schedule type: Simple, CFG " \
               "scale: 4, Seed: 7" in meta["parameters"]
        assert "Family: sd3" in meta["parameters"]
        assert params["model_source"] == f"hf:{repo}@{COMMIT}"
        (index,) = (tmp_path / "models").rglob("model_index.json")  # the whole folder came
        assert sorted(p.relative_to(index.parent).as_posix() for p in index.parent.rglob("*")
                      if p.is_file()) == sorted(hub.repos[repo].files)
        for argv, needle in [
            (["--scheduler", "dpmpp_2m"], "SD 3.5 is a flow-matching model: it runs the Euler "
                                          "sampler only, not DPM++ 2M; pass --scheduler euler"),
            (["--width", "72"], "SD 3.5 needs a width that is a multiple of 16, got 72"),
            (["--guidance", "3"], "--guidance does not apply to SD 3.5"),
        ]:
            r = cli.run(*model, "--prompt", "a red barn", "--steps", "2", "--height", "64",
                        *(["--width", "64"] if "--width" not in argv else []), *argv)
            assert r.returncode == 2, (argv, r.stderr)
            assert needle in one_line(r.stderr), argv
        assert len(list(cli.out.glob("*.png"))) == 1
        assert len(labelled(docker_client, cli.name)[0]) == 1
