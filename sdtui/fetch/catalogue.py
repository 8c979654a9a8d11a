"""The curated catalogue: short names for models sdtui runs today, each resolving to an exact
repo and file. Only families the worker runs are listed (SD 1.x, SDXL); FLUX.1, SD 3.5 and
FLUX.2 names come with the families themselves (issue 17).

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
class Entry:
    name: str
    title: str
    source: HfRef
    licence: str
    licence_url: str
    gated: bool
    size: str  # what the download weighs, as a person reads it


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


def listing() -> list[str]:
    """`sdtui --list-models`: one line per name."""
    lines = []
    for e in CATALOGUE.values():
        gated = "gated: accept the licence, set HF_TOKEN" if e.gated else "not gated"
        lines.append(f"{e.name:<8} {e.title} — {e.source} ({e.size}; {e.licence}, {gated}; "
                     f"{e.licence_url})")
    return lines
