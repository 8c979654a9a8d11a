"""The prompt panel's fields: what each one is, its one-line help, and how its text becomes a
value of the core's GenerateSettings, checked by the protocol itself.

UI-free. Adding a field is one PromptField and its name in MAIN_GRID, SAMPLER_ROW or MORE_GRID; the
screen builds the widget from its kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sdtui import protocol, samplers
from sdtui.errors import BadInput, BadSetting
from sdtui.userfiles import check_file, expand

Kind = Literal["text", "int", "float", "path", "select", "bool"]


@dataclass(frozen=True)
class PromptField:
    name: str  # a GenerateSettings field
    label: str
    kind: Kind
    help: str
    placeholder: str = ""
    choices: tuple[tuple[str, str], ...] = ()  # (shown, value) for a select
    optional: bool = False  # empty means "none" (not the default)


# The sampler choice that leaves it to the model (Euler a; Euler for FLUX.1).
MODEL_SAMPLER = "model's"


def _sampler_choices() -> tuple[tuple[str, str], ...]:
    return (("model's (euler_a; FLUX.1 euler)", MODEL_SAMPLER),
            *((s, s) for s in protocol.SCHEDULERS))


def _schedule_choices() -> tuple[tuple[str, str], ...]:
    """A1111's Schedule type labels; "Automatic" is what A1111 picks for the sampler."""
    return (*((samplers.SCHEDULE_A1111[s], s) for s in protocol.SCHEDULES),
            ("Automatic", samplers.AUTOMATIC))


FIELDS: dict[str, PromptField] = {f.name: f for f in (
    PromptField("prompt", "Prompt", "text", "What to draw. (word:1.3) weighs a word; "
                "a:0.3 b:0.7 blends two prompts; long prompts are handled in chunks."),
    PromptField("negative_prompt", "Negative prompt", "text", "What to steer away from, "
                "e.g. blurry, low quality.", "what to avoid"),
    PromptField("steps", "steps", "int", "Sampling steps, 1–150: more is slower and finer "
                "(20–30 is usual); empty: the model's (30; FLUX.1 [schnell] 4, [dev] 28).",
                "model's"),
    PromptField("cfg", "cfg", "float", "Guidance scale, 0–50: how closely the image follows "
                "the prompt (7–8 is usual; high values look harsh); empty: the model's (7.5; "
                "FLUX.2 [klein] base 4).", "model's"),
    PromptField("guidance", "Distilled CFG", "float", "FLUX.1 [dev]'s embedded guidance, "
                "0–100 (Forge's Distilled CFG Scale; 3.5 is usual): [dev] runs no CFG, so "
                "this takes cfg's place.", "model's (3.5)"),
    PromptField("count", "count", "int", "Images per Generate, 1–16; they use seeds seed, "
                "seed+1, …"),
    PromptField("width", "width", "int", "Image width in pixels: a multiple of 8, 64–2048; "
                "empty: the model's own (512 for SD 1.x, 1024 for SDXL).", "model's"),
    PromptField("height", "height", "int", "Image height in pixels: a multiple of 8, 64–2048; "
                "empty: the model's own.", "model's"),
    PromptField("scheduler", "sampler", "select", "The sampler (A1111's Sampler): euler_a is "
                "fast and varied, dpmpp_2m sharp in few steps.", choices=_sampler_choices()),
    PromptField("schedule", "schedule", "select", "The noise schedule (A1111's Schedule "
                "type): Uniform is the sampler's own, Karras often cleaner in few steps; "
                "Automatic is what A1111 picks for the sampler.", choices=_schedule_choices()),
    PromptField("seed", "seed", "int", "The random seed: the same seed, prompt and settings "
                "give the same image. Lock it to keep it; otherwise each Generate picks one.",
                "random", optional=True),
    PromptField("init_image", "init image (img2img)", "path", "A PNG or JPEG to start from "
                "instead of noise (the guide's -I); empty for text to image.",
                "none: text to image", optional=True),
    PromptField("mask", "mask (inpainting)", "path", "A PNG or JPEG the init image's size: "
                "white or transparent parts are repainted, the rest is kept (the guide's -M).",
                "none: the whole image", optional=True),
    PromptField("strength", "strength", "float", "img2img: how much to change the init image, "
                "0–1 (0 keeps it, 1 ignores it; -f)."),
    PromptField("fit", "fit", "select", "img2img: resize the init image to the size, or crop "
                "it to the size's shape.", choices=(("resize", "resize"), ("crop", "crop"))),
    PromptField("gfpgan", "faces (GFPGAN)", "float", "Face restoration strength, 0–1 (0 is "
                "off; -G). Needs GFPGANv1.3.pth beside the model.", "0 = off"),
    PromptField("upscale", "upscale", "select", "Real-ESRGAN upscaling ×2 or ×4 (-U). Needs "
                "RealESRGAN_x2plus.pth / _x4plus.pth beside the model.",
                choices=(("off", "off"), ("×2", "2"), ("×4", "4"))),
    PromptField("upscale_strength", "upscale mix", "float", "How much of the upscale to keep "
                "against a plain resize, 0–1."),
    PromptField("variation_amount", "variation", "float", "Variations (-v): how far from the "
                "seed's image, 0–1 (0 is off); text to image only.", "0 = off"),
    PromptField("variation_seed", "variation seed", "int", "The seed the variation moves "
                "towards (-V); empty picks one.", "random", optional=True),
    PromptField("grid", "Grid of the batch", "bool", "Also save one PNG with the batch's "
                "images side by side (-g)."),
)}
MAIN_GRID = ("steps", "cfg", "guidance", "count", "width", "height")
SAMPLER_ROW = ("scheduler", "schedule")
MORE_GRID = ("strength", "fit", "gfpgan", "upscale", "upscale_strength", "variation_amount",
             "variation_seed")
MORE_FIELDS = ("init_image", "mask", *MORE_GRID, "grid")
MORE_TITLE = "More: img2img, mask, faces, upscale, variations"
# What More holds when set, as its header says it: (field, words).
MORE_HELD = (("init_image", "init image"), ("mask", "mask"), ("gfpgan", "faces"),
             ("upscale", "upscale"), ("variation_amount", "variation"), ("grid", "grid"))
# Fields whose check reads other fields: a schedule exists for some samplers only.
CHECKED_WITH = {"schedule": ("scheduler",)}


def parse(name: str, raw: Any) -> Any:
    """A field's text (or checkbox/select value) as the settings value; None when empty.
    Raises BadSetting with the message shown under the field."""
    field = FIELDS[name]
    if field.kind == "bool" or field.kind == "select":
        if name == "upscale":
            return None if raw in ("off", None) else int(str(raw))
        return None if name == "scheduler" and raw == MODEL_SAMPLER else raw
    text = str(raw).strip() if raw is not None else ""
    if field.kind == "text":
        return str(raw) if raw is not None else ""
    if not text:
        return None
    if field.kind == "path":
        try:
            return expand(text, field.label)
        except BadInput as exc:
            raise BadSetting(name, exc.message) from None
    try:
        return int(text) if field.kind == "int" else float(text)
    except ValueError:
        kind = "a whole number" if field.kind == "int" else "a number"
        raise BadSetting(name, f"{field.label} must be {kind}") from None


def schedule_choices(sampler: str | None, flow: bool = False) -> tuple[tuple[str, str], ...]:
    """The schedule list, each schedule the sampler lacks marked as such; a flow-matching
    family's own schedules only."""
    if flow:
        return tuple((samplers.SCHEDULE_A1111[s], s) for s in samplers.FLOW_SCHEDULES)
    usable = samplers.SAMPLERS[sampler].schedules if sampler in samplers.SAMPLERS else None
    return tuple((shown if usable is None or value in usable or value in (
        samplers.DEFAULT_SCHEDULE, samplers.AUTOMATIC) else f"{shown} ✗ not for {sampler}",
                  value) for shown, value in _schedule_choices())


# --- the loaded model's family ------------------------------------------------------------------

# What each family takes and where it runs, for the help (the README's family table has more).
FAMILY_HELP = (
    ("SD 1.x, 2.x, SDXL", "cfg and a negative prompt, every sampler, 30 steps; any GPU "
     "(a g4dn.xlarge's T4) or the CPU."),
    ("FLUX.1 [dev]", "Distilled CFG (3.5) in place of cfg, no negative prompt, Euler (Uniform "
     "or Simple), 28 steps; GGUF sets (flux1-dev:q8, :q4) on a g4dn.xlarge's T4 with the text "
     "encoders offloaded, at 16 bits a g6e (estimates, not yet measured on a GPU)."),
    ("FLUX.1 [schnell]", "no guidance and no negative prompt, Euler, 4 steps; instances as "
     "[dev]."),
    ("SD 3.5", "cfg and a negative prompt, Euler, 28 steps (Large Turbo: neither, 4 steps); "
     "Medium on a g4dn.xlarge, Large on a g5/g6 (24 GB), or on a T4 as a Q4/Q5 GGUF."),
    ("FLUX.2 [klein] 4B", "no guidance and no negative prompt, Euler, 4 steps (base: cfg 4, 50 "
     "steps); a g4dn.xlarge with its text encoder offloaded (estimate), whole on a g5, g6 or "
     "g6e."),
)
# Which fields a family's way of guiding leaves out (see `ready`'s "guidance").
_HIDDEN_BY_GUIDANCE = {
    "cfg": frozenset({"guidance"}),
    "embedded": frozenset({"cfg", "negative_prompt"}),  # FLUX.1 [dev]: Distilled CFG instead
    "none": frozenset({"cfg", "guidance", "negative_prompt"}),  # distilled: neither
}
# What a field left out sends, so that the form never sends what the family refuses.
_LEFT_OUT = {"negative_prompt": "", "guidance": None}


@dataclass(frozen=True)
class FamilyView:
    """How the prompt form fits the loaded model's family, from the worker's `ready`: the
    fields it leaves out, the steps it runs, the samplers and schedules it takes."""

    label: str | None
    hidden: frozenset[str]
    steps: int | None  # the model's default steps
    flow: bool  # a flow-matching family: Euler, schedules Uniform and Simple

    def choices(self, name: str) -> tuple[tuple[str, str], ...]:
        if name == "scheduler" and self.flow:
            euler = samplers.FLOW_SAMPLERS[0]
            return ((f"model's ({euler})", MODEL_SAMPLER), *((s, s) for s in
                                                             samplers.FLOW_SAMPLERS))
        if name == "schedule" and self.flow:
            return schedule_choices(None, flow=True)
        return FIELDS[name].choices

    def placeholder(self, name: str) -> str:
        if name == "steps" and self.steps:
            return f"model's ({self.steps})"
        return FIELDS[name].placeholder

    def note(self) -> str:
        """One line on what the form leaves out for this family; empty when nothing."""
        if not self.label or not self.hidden - {"guidance"}:
            return ""
        takes = "Distilled CFG in place of cfg" if "guidance" not in self.hidden else \
            "no guidance (distilled)"
        sampler = ", Euler only" if self.flow else ""
        return f"{self.label}: {takes}, no negative prompt{sampler}"

    def fit(self, params: dict[str, Any]) -> dict[str, Any]:
        """Request parameters without what this family refuses that a left-out field or the
        config would otherwise send: a negative prompt, guidance, another family's sampler
        (the model's own runs instead)."""
        fitted = {**params, **{k: v for k, v in _LEFT_OUT.items() if k in self.hidden}}
        if self.flow and fitted.get("scheduler") not in (None, *samplers.FLOW_SAMPLERS):
            fitted["scheduler"] = None
        if self.flow and fitted.get("schedule") not in samplers.FLOW_SCHEDULES:
            fitted["schedule"] = samplers.DEFAULT_SCHEDULE
        return fitted


def family_view(ready: Mapping[str, Any] | None) -> FamilyView:
    """The form for the model a worker's `ready` describes (an unknown one: every field)."""
    ready = ready or {}
    guidance = ready.get("guidance") or "cfg"
    return FamilyView(ready.get("family_label"), _HIDDEN_BY_GUIDANCE.get(
        guidance, _HIDDEN_BY_GUIDANCE["cfg"]), ready.get("default_steps"),
        ready.get("sampling") == samplers.FLOW)


def _check_schedule(sampler: Any, schedule: str) -> None:
    """A schedule the sampler lacks, in the list's own words (Uniform, not "default")."""
    if sampler not in samplers.SAMPLERS or schedule in (samplers.DEFAULT_SCHEDULE,
                                                        samplers.AUTOMATIC):
        return
    usable = samplers.SAMPLERS[sampler].schedules
    if schedule not in usable:
        labels = ["Uniform", *(samplers.SCHEDULE_A1111[s] for s in usable), "Automatic"]
        raise BadSetting("schedule", f"{sampler} has no {samplers.SCHEDULE_A1111[schedule]} "
                         f"schedule; choose {', '.join(labels[:-1])} or {labels[-1]}")


def check(name: str, value: Any, form: Mapping[str, Any] | None = None) -> None:
    """The protocol's own check of one value (its range, its multiple of 8, ...); `form`, the
    form's other values, for the fields in CHECKED_WITH."""
    if value is None:
        return
    if name == "schedule":
        _check_schedule((form or {}).get("scheduler"), value)
    if FIELDS[name].kind == "path":
        try:
            check_file(Path(value), FIELDS[name].label)
        except BadInput as exc:
            raise BadSetting(name, exc.message) from None
        return
    if name not in protocol.GENERATE_FIELDS:
        return
    with_fields = {other: (form or {}).get(other) for other in CHECKED_WITH.get(name, ())}
    try:
        protocol.request("generate", **{"id": "check", "prompt": "-",
                                        **{k: v for k, v in with_fields.items() if v is not None},
                                        name: value})
    except protocol.ProtocolError as exc:
        message = str(exc).removeprefix("generate: ")
        raise BadSetting(name, message.replace(name, FIELDS[name].label, 1)) from None


def shown(value: Any) -> str:
    """A settings value as the field's text."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _holds(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw or "").strip()
    if text in ("", "off"):
        return False
    try:
        return float(text) != 0
    except ValueError:
        return True  # a path (or a value its field marks as wrong)


def more_title(raw: Mapping[str, Any]) -> str:
    """More's header: what it holds when anything in it is set, so a collapsed More never
    hides an init image, a mask or postprocessing from the next Generate."""
    held = [words for name, words in MORE_HELD if _holds(raw.get(name))]
    if not held:
        return MORE_TITLE
    listed = held[0] if len(held) == 1 else f"{', '.join(held[:-1])} and {held[-1]}"
    return f"More: {listed} set"
