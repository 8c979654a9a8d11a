"""The curated catalogue: short names for models sdtui runs today, each resolving to exact
repos and files. SD 1.x and SDXL are one checkpoint each; SD 3.5 and FLUX.2 Klein are their
diffusers repos whole (what the worker loads them from); FLUX.1 is BFL's diffusers repo whole
(`flux1-schnell`, `flux1-dev`), or a split set (`NAME:q8`, `NAME:q4`) gathered from the repos
ComfyUI users get them from into one folder laid out as sdtui.modelsets reads it: city96's GGUF
transformer, comfyanonymous's CLIP-L and T5-XXL, BFL's VAE, and BFL's T5 tokenizer and CLIP-L
config in the transformer's `S.config/` sidecar (what the weights cannot say).

No entry pins a revision or a sha256: none is stated by a public source we could cite. The
commit and sha256 a fetch resolved are recorded in the deployment's ledger instead, and the
model's sha256 in every image's metadata, so a run can be repeated exactly.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from sdtui.errors import BadInput
from sdtui.fetch.refs import HfRef


@dataclass(frozen=True)
class Part:
    """One file of a split set: where it is on the Hub and where it goes in the set folder."""

    repo: str
    path: str
    dest: str


@dataclass(frozen=True)
class SplitSet:
    parts: tuple[Part, ...]  # the transformer first: it names the set to the worker

    @property
    def repos(self) -> tuple[str, ...]:
        """Each repo once, in the order the parts name them (a pinned name's commits' order)."""
        return tuple(dict.fromkeys(p.repo for p in self.parts))

    def __str__(self) -> str:
        weights = [p for p in self.parts if p.dest == p.path]
        return " + ".join(f"hf:{p.repo}/{p.path}" for p in weights) + " (+ configs)"


# BFL's T5 tokenizer and CLIP-L config (black-forest-labs/FLUX.1-*: tokenizer_2/, text_encoder/):
# the files the worker reads from a set's sidecar (sdtui.worker.models._load_flux_files).
FLUX_CONFIGS = ("tokenizer_2/tokenizer.json", "tokenizer_2/tokenizer_config.json",
                "tokenizer_2/special_tokens_map.json", "text_encoder/config.json")


def flux1_set(variant: str, quant: str, t5: str) -> SplitSet:
    """FLUX.1 [variant] as a split set: city96's `flux1-VARIANT-QUANT.gguf` (ComfyUI-GGUF),
    comfyanonymous's `clip_l` and `t5` text encoders, BFL's `ae.safetensors` and configs."""
    transformer = f"flux1-{variant}-{quant}.gguf"
    bfl = f"black-forest-labs/FLUX.1-{variant}"
    sidecar = transformer.removesuffix(".gguf") + ".config"
    encoders = "comfyanonymous/flux_text_encoders"
    return SplitSet((
        Part(f"city96/FLUX.1-{variant}-gguf", transformer, transformer),
        Part(encoders, "clip_l.safetensors", "clip_l.safetensors"),
        Part(encoders, f"{t5}.safetensors", f"{t5}.safetensors"),
        Part(bfl, "ae.safetensors", "ae.safetensors"),
        *(Part(bfl, path, f"{sidecar}/{path}") for path in FLUX_CONFIGS)))


@dataclass(frozen=True)
class Entry:
    name: str
    title: str
    source: HfRef | SplitSet
    licence: str
    licence_url: str
    gated: bool | None  # None: not verified from a public source (the Hub says when fetching)
    size: str  # what the download weighs, as a person reads it
    note: str = ""  # what else to know before fetching it (the GPU it needs, what is unverified)


def flux1_entries(variant: str, steps: int, licence: str, gated: bool) -> tuple[Entry, ...]:
    """FLUX.1 [variant]: BFL's diffusers repo whole (bf16), and split sets with city96's Q8_0
    or Q4_K_S transformer; [dev]'s licence gates every one of them (its BFL repo is gated)."""
    label, page = f"FLUX.1 [{variant}]", f"https://huggingface.co/black-forest-labs/FLUX.1-{variant}"
    return (
        Entry(f"flux1-{variant}", f"{label}, {steps} steps (1024x1024), bf16 diffusers repo",
              HfRef(f"black-forest-labs/FLUX.1-{variant}"), licence, page, gated, "34 GB"),
        Entry(f"flux1-{variant}:q8", f"{label}, transformer GGUF Q8_0, T5-XXL fp16",
              flux1_set(variant, "Q8_0", "t5xxl_fp16"), licence, page, gated, "23 GB"),
        Entry(f"flux1-{variant}:q4", f"{label}, transformer GGUF Q4_K_S, T5-XXL fp8",
              flux1_set(variant, "Q4_K_S", "t5xxl_fp8_e4m3fn"), licence, page, gated, "12 GB"),
    )


CATALOGUE: dict[str, Entry] = {e.name: e for e in (
    Entry("sd15", "Stable Diffusion 1.5 (512x512)",
          HfRef("stable-diffusion-v1-5/stable-diffusion-v1-5",
                "v1-5-pruned-emaonly.safetensors"),
          "CreativeML OpenRAIL-M",
          "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5", False, "4.3 GB"),
    Entry("sdxl", "Stable Diffusion XL base 1.0 (1024x1024)",
          HfRef("stabilityai/stable-diffusion-xl-base-1.0", "sd_xl_base_1.0.safetensors"),
          "CreativeML OpenRAIL++-M",
          "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0", False, "6.9 GB"),
    *flux1_entries("schnell", 4, "Apache-2.0", gated=False),
    *flux1_entries("dev", 28, "FLUX.1 [dev] Non-Commercial License", gated=True),
    *(Entry(f"sd35-{size}", f"Stable Diffusion 3.5 {title} (1024x1024), diffusers repo",
            HfRef(f"stabilityai/stable-diffusion-3.5-{size}"), "Stability AI Community License",
            f"https://huggingface.co/stabilityai/stable-diffusion-3.5-{size}", True, weight,
            note) for size, title, weight, note in (
        ("medium", "Medium", "≈16 GB", "the size is reckoned from the parameter counts"),
        ("large", "Large", "≈28 GB", "the size is reckoned from the parameter counts; runs on "
         "a g5 or g6 (24 GB) with its text encoders offloaded, whole on a g6e, not on a T4 "
         "(estimates; on a T4 use a Q4/Q5 GGUF set)"))),
    Entry("flux2-klein", "FLUX.2 [klein] 4B, 4 steps (1024x1024), diffusers repo",
          HfRef("black-forest-labs/FLUX.2-klein-4B"), "Apache-2.0",
          "https://huggingface.co/black-forest-labs/FLUX.2-klein-4B", None, "≈16 GB",
          "runs on a g4dn.xlarge's T4 with its text encoder offloaded, whole on a g5, g6 or "
          "g6e (estimates); whether the repo is gated was not verified here "
          "(a gated answer is met with the HF_TOKEN line); the size is reckoned from the "
          "parameter counts"),
)}


def entry(name: str) -> Entry:
    try:
        return CATALOGUE[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(CATALOGUE), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise BadInput(f"unknown model name {name!r} (not a file here, not in the catalogue)",
                       fix=f"{hint}`sdtui --list-models` lists the names; a path, hf:ORG/REPO "
                       "or civitai:ID also work") from None


def gating(e: Entry) -> str:
    """Whether the entry's repo is gated, in the words `--list-models` and the app both use."""
    return {True: "gated: accept the licence, set HF_TOKEN", False: "not gated",
            None: "gated: not verified"}[e.gated]


def listing() -> list[str]:
    """`sdtui --list-models`: one line per name."""
    lines = []
    width = max(len(name) for name in CATALOGUE)
    for e in CATALOGUE.values():
        note = f" Note: {e.note}." if e.note else ""
        lines.append(f"{e.name:<{width}} {e.title} — {e.source} ({e.size}; {e.licence}, "
                     f"{gating(e)}; {e.licence_url}){note}")
    return lines
