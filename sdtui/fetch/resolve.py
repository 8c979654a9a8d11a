"""A --model value to what it names: a local path stays a path; a reference is resolved (over
the network, before anything is created) to the exact files of one model set."""

from __future__ import annotations

from dataclasses import replace

from sdtui.errors import BadInput
from sdtui.fetch.catalogue import entry
from sdtui.fetch.civitai import resolve_civitai
from sdtui.fetch.hf import resolve_hf, resolve_hf_lora
from sdtui.fetch.plan import Resolved
from sdtui.fetch.refs import CatalogueRef, CivitaiRef, HfRef, parse_ref


def resolve(text: str) -> Resolved:
    ref = parse_ref(text)
    if isinstance(ref, CatalogueRef):
        e = entry(ref.name)
        resolved = resolve_hf(e.source)
        return replace(resolved, ref=text, source=f"{e.name} = {resolved.source}")
    if isinstance(ref, HfRef):
        return resolve_hf(ref)
    if isinstance(ref, CivitaiRef):
        return resolve_civitai(ref)
    raise BadInput(f"{text} is a local path, not a name to fetch", fix="check the path")


def resolve_lora(text: str) -> Resolved:
    """A LoRA to fetch into the `loras/` folder beside the model (`--lora-file`)."""
    ref = parse_ref(text)
    if isinstance(ref, HfRef):
        return resolve_hf_lora(ref)
    if isinstance(ref, CivitaiRef):
        return resolve_civitai(ref, lora=True)
    raise BadInput(f"--lora-file {text}: give hf:ORG/REPO/FILE.safetensors or civitai:ID",
                   fix="a LoRA you already have goes in the loras/ folder beside the model")
