"""SD 3.5 as ComfyUI users keep it, written from the tiny diffusers folder's components and
Stability's own MMDiT (tests/test_sd3_files.py): a transformer file (Stability's, with the VAE
inside, or city96's GGUF), clip_l.safetensors, clip_g.safetensors, an optional T5 and a VAE."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.helpers_flux_files import (
    bfl_autoencoder,
    bfl_flux,
    comfy_clip_l,
    comfy_t5,
    gguf,
    tiny_clip,
    tiny_t5,
    write_sd3_gguf,
    write_set,
    write_t5_gguf,
)
from tests.test_sd3_files import _vae_to_ldm, prefixed, stability_mmditx

CLIPS = {"text_encoder": "clip_l.safetensors", "text_encoder_2": "clip_g.safetensors"}
T5_FILES = {"fp16": "t5xxl_fp16.safetensors", "fp32": "t5xxl.safetensors",
            "fp8": "t5xxl_fp8_e4m3fn.safetensors", "gguf": "t5-v1_1-xxl-encoder-Q8_0.gguf"}
VAE_FILES = {"diffusers": "sd3.5_vae.safetensors", "ldm": "sd3_vae.safetensors"}


def tiny_pipeline(folder: Path) -> Any:
    import diffusers

    return diffusers.StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)


def write_sd3_set(out: Path, folder: Path, mmditx: torch.nn.Module, transformer: str,
                  t5: str | None = None, vae: str = "inside", qtype=None, pipe=None) -> Path:
    """A split SD 3.5 set in `out` from the tiny folder's encoders and VAE and `mmditx`;
    returns its transformer file. transformer: "safetensors" (sd3.5_large.safetensors, the
    MMDiT under model.diffusion_model. with the VAE under first_stage_model. when vae is
    "inside") or "gguf" (sd3.5_large-Q8_0.gguf, or `qtype`); t5: None or a T5_FILES key; vae:
    "inside" or a VAE_FILES key. The sidecar holds what the toy's weights cannot say (the CLIPs'
    head counts) and T5's tokenizer. `pipe`: the folder's pipeline, if already loaded."""
    pipe = pipe or tiny_pipeline(folder)
    out.mkdir(parents=True)
    mmdit = prefixed(mmditx, "model.diffusion_model.")
    if transformer == "gguf":
        qtype = qtype or gguf().GGMLQuantizationType.Q8_0
        path = write_sd3_gguf(mmdit, out / f"sd3.5_large-{qtype.name}.gguf", qtype)
    else:
        inside = {"first_stage_model." + k: v.contiguous()
                  for k, v in _vae_to_ldm(pipe.vae).items()} if vae == "inside" else {}
        path = out / "sd3.5_large.safetensors"
        save_file(mmdit | inside, path)
    for name, file in CLIPS.items():
        save_file(comfy_clip_l(getattr(pipe, name)), out / file)
    if t5 == "gguf":
        write_t5_gguf(pipe.text_encoder_3, out / T5_FILES[t5], gguf().GGMLQuantizationType.Q8_0)
    elif t5 is not None:
        dtype = {"fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}[t5]
        save_file(comfy_t5(pipe.text_encoder_3, dtype), out / T5_FILES[t5])
    if vae == "diffusers":
        save_file({k: v.contiguous() for k, v in pipe.vae.state_dict().items()},
                  out / VAE_FILES[vae])
    elif vae == "ldm":
        save_file({k: v.contiguous() for k, v in _vae_to_ldm(pipe.vae).items()},
                  out / VAE_FILES[vae])
    sidecar = path.with_name(path.stem + ".config")
    for name in CLIPS:
        (sidecar / name).mkdir(parents=True)
        (sidecar / name / "config.json").write_text((folder / name / "config.json").read_text())
    if t5 is not None:
        shutil.copytree(folder / "tokenizer_3", sidecar / "tokenizer_3")
    return path


def linked_copy(folder: Path, out: Path, leaving_out: str) -> Path:
    """`folder` again at `out` (hard links, no bytes copied) without the file `leaving_out`."""
    shutil.copytree(folder, out, copy_function=os.link,
                    ignore=lambda _, names: [n for n in names if n == leaving_out])
    return out


def both_sets(root: Path, tiny_sd3: dict[str, Path], sd3_t5: str | None = None
              ) -> dict[str, Path]:
    """A FLUX.1 [dev] set (flux1-dev.safetensors with clip_l, t5xxl_fp8_e4m3fn and ae) and an
    SD 3.5 set (sd3.5_large-Q8_0.gguf with clip_l, clip_g, sd3.5_vae and T5 as `sd3_t5` says),
    by their transformer files, keyed by the folders' names."""
    return {"flux1-dev": write_set(root / "flux1-dev", {
                "flux": bfl_flux(guidance=True), "clip": tiny_clip(), "t5": tiny_t5(),
                "ae": bfl_autoencoder()}),
            "sd3.5_large": write_sd3_set(root / "sd3.5_large", tiny_sd3["medium"],
                                         stability_mmditx(), "gguf", sd3_t5, vae="diffusers")}


def family_sets(root: Path, tiny_sd3: dict[str, Path], tiny_klein: dict[str, Path],
                sd3_t5: str = "fp8") -> dict[str, Path]:
    """One split set of each family, by its transformer file (the set's folder is its parent),
    keyed by family: FLUX.1 [dev] with a GGUF transformer; SD 3.5 as Stability's file (its VAE
    inside) with the two CLIPs and T5 as `sd3_t5` says; FLUX.2 Klein as BFL's file with the
    tokenizer in its sidecar."""
    from tests.helpers_klein_files import write_klein_set
    from tests.test_flux_formats import references
    from tests.test_flux_formats import write_set as write_flux_set

    return {
        "flux1": write_flux_set(root / "flux1-dev", "dev", references("dev"), transformer="gguf"),
        "sd3": write_sd3_set(root / "sd3.5_large", tiny_sd3["medium"], stability_mmditx(),
                             "safetensors", sd3_t5),
        "flux2-klein": write_klein_set(tiny_klein["distilled"], root / "klein",
                                       "flux-2-klein-4b.safetensors"),
    }
