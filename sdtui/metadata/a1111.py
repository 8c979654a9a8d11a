"""A1111's infotext (the `parameters` chunk): written as A1111 writes it, read as A1111 reads it.

An infotext is the prompt, an optional `Negative prompt:` part, and a last line of
`Key: value` pairs (a value with a comma, colon or newline is JSON-quoted). A1111 counts the
last line as settings only when it has at least three pairs; we do the same.

The settings line is read by a linear scanner that finds exactly the pairs A1111's regex
(`re_param` in modules/infotext_utils.py) finds, without its quadratic backtracking on long
lines. Stdlib only.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdtui import samplers
from sdtui.errors import BadInput
from sdtui.metadata.parsed import Parsed, bad_value, to_float, to_int

INFOTEXT_MIN_PAIRS = 3  # A1111's own test for a settings line
# Real settings lines are a few KiB even with LoRA and extension fields; a longer one is refused
# before its pairs are held in memory.
MAX_SETTINGS_CHARS = 64 * 1024
GFPGAN_LABEL = "GFPGAN"
LANCZOS = "Lanczos"
# Real-ESRGAN weights sdtui runs for -U 2|4, by A1111's upscaler names.
ESRGAN_LABELS = {2: "R-ESRGAN 2x+", 4: "R-ESRGAN 4x+"}
MODEL_HASH_DIGITS = 10  # A1111's "AutoV2" hash: sha256, first 10 hex digits
LORA_HASH_DIGITS = 12  # A1111's LoRA "AutoV3" hash
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
DISTILLED_CFG = "Distilled CFG Scale"
FAMILY = "Family"
_NAMED_FAMILIES = ("flux1", "flux2-klein", "sd3")


def quote(text: Any) -> str:
    """A1111's quoting of a settings value."""
    text = _number(text)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_name(model: Any) -> str:
    name = Path(str(model)).name if model else ""
    for suffix in _MODEL_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def _lora_hashes(loras: Any) -> str | None:
    parts = []
    for lora in loras if isinstance(loras, list) else []:
        if not isinstance(lora, dict) or not lora.get("name"):
            continue
        digest = lora.get("hash") or str(lora.get("sha256") or lora.get("sha") or "")[
            :LORA_HASH_DIGITS]
        if digest:
            parts.append(f"{lora['name']}: {digest}")
    return ", ".join(parts) or None


def _upscale_fields(params: dict[str, Any]) -> list[tuple[str, Any]]:
    scale = params.get("upscale")
    if not scale:
        return []
    strength = params.get("upscale_strength", 1.0)
    label = ESRGAN_LABELS.get(scale, f"Real-ESRGAN x{scale}")
    if strength >= 1:
        return [("Postprocess upscale by", scale), ("Postprocess upscaler", label)]
    # sdtui blends Real-ESRGAN into a Lanczos resize, as A1111's second upscaler does.
    return [("Postprocess upscale by", scale), ("Postprocess upscaler", LANCZOS),
            ("Postprocess upscaler 2", label), ("Postprocess upscaler 2 visibility", strength)]


def format_infotext(params: dict[str, Any]) -> str:
    """The `parameters` text for an image sdtui made, with only the fields that apply."""
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    scheduler = str(params.get("scheduler") or "")
    known = scheduler in samplers.SAMPLERS
    schedule = params.get("schedule") or samplers.DEFAULT_SCHEDULE
    sha = str(params.get("model_sha256") or "")
    variation = params.get("variation_amount") or 0
    gfpgan = params.get("gfpgan") or 0
    img2img = bool(params.get("init_image"))
    fields: list[tuple[str, Any]] = [
        ("Steps", params.get("steps")),
        ("Sampler", samplers.a1111_label(scheduler) if known else scheduler or None),
        ("Schedule type", samplers.SCHEDULE_A1111.get(schedule) if known else None),
        ("CFG scale", params.get("cfg")),
        # Forge's name for FLUX.1 [dev]'s embedded guidance.
        (DISTILLED_CFG, params.get("guidance")),
        ("Seed", params.get("seed")),
        ("Face restoration", GFPGAN_LABEL if gfpgan else None),
        ("Size", f"{params['width']}x{params['height']}" if "width" in params else None),
        ("Model hash", sha[:MODEL_HASH_DIGITS] or None),
        ("Model", model_name(params.get("model")) or None),
        # Neither A1111 nor Forge names the family; sdtui does for the transformer families
        # (FLUX.1, SD 3.5), which A1111's readers would otherwise take for a UNet one.
        (FAMILY, params.get("family") if params.get("family") in _NAMED_FAMILIES else None),
        ("Variation seed", params.get("variation_seed") if variation else None),
        ("Variation seed strength", variation or None),
        # Only img2img has a denoising strength: on a txt2img image A1111 reads it as hires fix.
        ("Denoising strength", params.get("strength") if img2img else None),
        ("Lora hashes", _lora_hashes(params.get("loras"))),
        ("GFPGAN visibility", gfpgan or None),
        *_upscale_fields(params),
    ]
    lines.append(", ".join(f"{key}: {quote(value)}" for key, value in fields
                           if value is not None))
    return "\n".join(lines)


# --- reading ------------------------------------------------------------------------------------

_KEY_CHARS = re.compile(r"[\w \-/]*")
_WORD = re.compile(r"\w")


def _free_quotes(line: str) -> list[int]:
    """Positions of the `"` that no backslash escapes (an even run of backslashes before it).
    Whether a quote is escaped does not depend on where a quoted value starts, so one pass
    serves every value on the line."""
    free, run = [], 0
    for pos, char in enumerate(line):
        if char == '"' and run % 2 == 0:
            free.append(pos)
        run = run + 1 if char == "\\" else 0
    return free


def settings_pairs(line: str) -> list[tuple[str, str]]:
    """The (key, raw value) pairs A1111's `re_param.findall(line)` returns, in linear time:
    `\\s*(\\w[\\w \\-/]+):\\s*("(?:\\\\.|[^\\\\"])+"|[^,]*)(?:,|$)`."""
    pairs: list[tuple[str, str]] = []
    free = _free_quotes(line)
    size, pos = len(line), 0
    while pos < size:
        start = pos
        while start < size and line[start].isspace():
            start += 1
        if start >= size:
            break
        if not _WORD.match(line, start):
            pos = start + 1
            continue
        key_end = _KEY_CHARS.match(line, start + 1).end()
        # Every start inside this run fails the same way, so the scan resumes at its end.
        if key_end >= size or line[key_end] != ":" or key_end - start < 2:
            pos = max(key_end, start + 1)
            continue
        value = key_end + 1
        while value < size and line[value].isspace():
            value += 1
        end = _quoted_end(line, value, free)
        if end is None:
            comma = line.find(",", value)
            end = size if comma < 0 else comma
        pairs.append((line[start:key_end], line[value:end]))
        pos = end + 1 if end < size and line[end] == "," else end
        if pos == end and end >= size:
            break
    return pairs


def _quoted_end(line: str, value: int, free: list[int]) -> int | None:
    """The end of a quoted value starting at `value`, when it is followed by `,` or the end."""
    if value >= len(line) or line[value] != '"':
        return None
    found = bisect.bisect_right(free, value)
    if found == len(free):
        return None
    close = free[found]
    if close == value + 1 or (close + 1 < len(line) and line[close + 1] != ","):
        return None
    if line[value + 1 : close].endswith("\\") and _odd_tail(line, value + 1, close):
        return None
    return close + 1


def _odd_tail(line: str, start: int, close: int) -> bool:
    run, pos = 0, close - 1
    while pos >= start and line[pos] == "\\":
        run, pos = run + 1, pos - 1
    return run % 2 == 1


def unquote(text: str) -> str:
    """A1111's unquote: a JSON string when it parses as one, else the text as it is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


@dataclass
class Infotext:
    prompt: str
    negative_prompt: str
    settings: dict[str, str] = field(default_factory=dict)


def parse_infotext(text: str) -> Infotext | None:
    """The parts of an infotext, or None when its last line is not a settings line."""
    *lines, last = text.strip().split("\n")
    if len(last) > MAX_SETTINGS_CHARS:
        raise BadInput(f"the infotext's last line is {len(last) // 1024} KiB long; real settings "
                       "lines are a few KiB", fix="pass a PNG with ordinary metadata")
    pairs = settings_pairs(last)
    if len(pairs) < INFOTEXT_MIN_PAIRS:
        return None
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            negative.append(line.removeprefix("Negative prompt:").strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    # A1111 skips a key whose value is empty; a later duplicate wins, as in its dict.
    settings = {key: unquote(value) for key, value in pairs if value}
    return Infotext("\n".join(prompt), "\n".join(negative), settings)


# Settings that only describe the file (which model, which version wrote it): never a warning.
_DESCRIPTIVE = {"Model", "Model hash", "Version", "Lora hashes", "TI hashes", "Hashes", "VAE",
                "VAE hash", FAMILY}
# Settings at A1111's defaults, which are sdtui's behaviour too.
_AT_DEFAULT = {("Clip skip", "1"), ("RNG", "GPU")}
# From 1.9 A1111 writes "Schedule type"; before, the schedule was part of the sampler's name.
_SCHEDULE_TYPE_SINCE = (1, 9)
_A1111_VERSION = re.compile(r"v(\d+)\.(\d+)")
_UPSCALE_KEYS = ("Postprocess upscale by", "Postprocess upscaler", "Postprocess upscaler 2",
                 "Postprocess upscaler 2 visibility")
TOOL = "A1111"


def read(text: str) -> Parsed | None:
    """Request parameters from an infotext, or None when the text is not one."""
    info = parse_infotext(text)
    if info is None:
        return None
    found = Parsed(TOOL, {"prompt": info.prompt, "negative_prompt": info.negative_prompt})
    params, settings = found.params, dict(info.settings)
    simple = {"Steps": ("steps", to_int), "CFG scale": ("cfg", to_float),
              "Seed": ("seed", to_int), "Variation seed": ("variation_seed", to_int),
              "Variation seed strength": ("variation_amount", to_float),
              "Denoising strength": ("strength", to_float),
              DISTILLED_CFG: ("guidance", to_float)}
    for key, (name, convert) in simple.items():
        if key in settings:
            params[name] = convert(TOOL, key, settings.pop(key))
    if "Sampler" in settings:
        found.set_sampler(settings.pop("Sampler"))
    _read_schedule(found, settings)
    if "Size" in settings:
        size = settings.pop("Size")
        width, x, height = size.partition("x")
        if not x:
            raise bad_value(TOOL, "Size", size, "WIDTHxHEIGHT")
        params["width"], params["height"] = to_int(TOOL, "Size", width), to_int(
            TOOL, "Size", height)
    if "Model" in settings:
        params["model"] = settings["Model"]
    if "Model hash" in settings:
        params["model_hash"] = settings["Model hash"]
    _read_face_restoration(found, settings)
    _read_upscale(found, settings)
    if "Hires upscale" in settings and "strength" in params:
        found.ignore("Denoising strength", params.pop("strength"))
    for key, value in settings.items():
        if key not in _DESCRIPTIVE and (key, value) not in _AT_DEFAULT:
            found.ignore(key, value)
    return found


def _read_schedule(found: Parsed, settings: dict[str, str]) -> None:
    label = settings.pop("Schedule type", None)
    if label is None:
        version = _A1111_VERSION.search(settings.get("Version", ""))
        newer = version and (int(version[1]), int(version[2])) >= _SCHEDULE_TYPE_SINCE
        label = "Automatic" if newer else None
    if label is None or "schedule" in found.params and label == "Automatic":
        return  # before 1.9: the sampler's own schedule, or the one its name implies
    # "Automatic" is the schedule A1111 1.9+ picks for the sampler (Karras for DPM++ 2M): the
    # sampler table knows which, and the request resolves it.
    found.set_schedule(label)


def _read_face_restoration(found: Parsed, settings: dict[str, str]) -> None:
    restorer = settings.pop("Face restoration", None)
    visibility = settings.pop("GFPGAN visibility", None)
    if restorer is not None and restorer != GFPGAN_LABEL:
        found.ignore("Face restoration", restorer)
        return
    if restorer is not None or visibility is not None:
        found.params["gfpgan"] = to_float(TOOL, "GFPGAN visibility", visibility or "1")


def _read_upscale(found: Parsed, settings: dict[str, str]) -> None:
    values = {key: settings.pop(key) for key in _UPSCALE_KEYS if key in settings}
    if not values:
        return
    by = values.get("Postprocess upscale by", "")
    scale = next((s for s, label in ESRGAN_LABELS.items() if by in (str(s), f"{s}.0")), None)
    first = values.get("Postprocess upscaler")
    second = values.get("Postprocess upscaler 2")
    strength: float | None = None
    if scale and first == ESRGAN_LABELS[scale] and second is None:
        strength = 1.0
    elif scale and first == LANCZOS and second == ESRGAN_LABELS[scale]:
        strength = to_float(TOOL, "Postprocess upscaler 2 visibility",
                            values.get("Postprocess upscaler 2 visibility", "1"))
    if strength is None:
        for key, value in values.items():
            found.ignore(key, value)
        return
    found.params["upscale"], found.params["upscale_strength"] = scale, strength
