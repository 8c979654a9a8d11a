"""FLUX.1 by catalogue name, end to end on Option B: the stand-in serves tiny FLUX.1 files under
the real repos' names and layouts (city96's GGUF transformer, comfyanonymous's text encoders,
BFL's VAE, T5 tokenizer and CLIP-L config), `sdtui --no-ui --model flux1-schnell:q8` gathers
them into one set folder and the real worker container generates from it; [dev] without a token
is refused in one line. (--from-png's re-run of a pinned source is
tests/fetch/test_fetch_source.py's: here the pinned name is resolved back to the same files.)"""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest
from local_cli import events, labelled, one_line, throwaway_cli

from sdtui.fetch.catalogue import CATALOGUE
from sdtui.fetch.resolve import resolve
from sdtui.metadata.reader import read_metadata, recorded_source
from tests.fetch.conftest import clean_env
from tests.fetch.standin import COMMIT, Hub

# T5's special tokens as BFL's tokenizer_2/special_tokens_map.json names them.
T5_SPECIALS = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def publish_flux1(hub: Hub, root: Path) -> None:
    """Tiny FLUX.1 files in the repos the FLUX.1 names fetch from, under the names they have
    there ([schnell]'s weights; [dev]'s repos hold the same, BFL's gated as on the Hub)."""
    from tests.test_flux_formats import references, write_set

    refs = references("schnell")
    transformer = write_set(root / "flux1", "schnell", refs, transformer="gguf")
    folder, sidecar = transformer.parent, transformer.with_suffix(".config")
    tokenizer = {f"tokenizer_2/{p.name}": p for p in (sidecar / "tokenizer_2").iterdir()}
    hub.add_repo("comfyanonymous/flux_text_encoders", {
        "clip_l.safetensors": folder / "clip_l.safetensors",
        "t5xxl_fp16.safetensors": folder / "t5xxl_fp16.safetensors",
        "t5xxl_fp8_e4m3fn.safetensors": folder / "t5xxl_fp16.safetensors"})
    for variant in ("schnell", "dev"):
        hub.add_repo(f"city96/FLUX.1-{variant}-gguf", {
            f"flux1-{variant}-{quant}.gguf": transformer for quant in ("Q8_0", "Q4_K_S")})
        hub.add_repo(f"black-forest-labs/FLUX.1-{variant}", {
            "ae.safetensors": folder / "ae.safetensors", **tokenizer,
            "tokenizer_2/special_tokens_map.json": json.dumps(T5_SPECIALS).encode(),
            "text_encoder/config.json": refs["clip"].config.to_json_string().encode(),
            "model_index.json": b'{"_class_name": "FluxPipeline"}'}, gated=variant == "dev")


@pytest.mark.docker
@pytest.mark.slow
def test_flux1_names_fetch_a_whole_set_that_generates_on_option_b(
        hub: Hub, tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
        worker_image: str) -> None:
    root = tmp_path_factory.mktemp("fetch-flux")
    publish_flux1(hub, root / "published")
    with throwaway_cli(root, docker_client) as cli:
        cli.env.update(clean_env(hub, root))
        args = ("--prompt", "a red barn", "--steps", "2", "--width", "64", "--height", "64",
                "--seed", "3", "--json")

        # [dev] is gated: no token, one line naming its licence page and HF_TOKEN, nothing made.
        refused = cli.run("--model", "flux1-dev:q4", *args)
        assert refused.returncode == 2, refused.stderr
        line = one_line(refused.stderr)
        assert f"{hub.url}/black-forest-labs/FLUX.1-dev" in line and "HF_TOKEN" in line
        assert not hub.served and not (root / "models").exists()
        assert labelled(docker_client, cli.name) == ([], [])

        made = cli.run("--model", "flux1-schnell:q8", *args)
        assert made.returncode == 0, made.stderr
        (image,) = [e for e in events(made.stdout) if e["event"] == "image"]
        params = read_metadata(Path(image["path"]))["params"]
        assert params["family"] == "flux1"
        assert params["model_source"] == f"flux1-schnell:q8@{COMMIT}+{COMMIT}+{COMMIT}"
        # One folder, laid out as sdtui.modelsets reads it, the T5 tokenizer in its sidecar.
        (gguf,) = (root / "models").rglob("flux1-schnell-Q8_0.gguf")
        held = sorted(p.relative_to(gguf.parent).as_posix()
                      for p in gguf.parent.rglob("*") if p.is_file())
        assert held == sorted(p.dest for p in CATALOGUE["flux1-schnell:q8"].source.parts)
        # The image records the name pinned to each repo's commit: it resolves to these files.
        pinned = recorded_source(Path(image["path"]))
        ledger = json.loads(next((root / "state").rglob(f"{cli.name}*.json")).read_text())
        assert resolve(pinned).record()["files"] == ledger["params"]["fetched"][0]["files"]
