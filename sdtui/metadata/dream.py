"""The guide's dream tool (InvokeAI 2.x): the `Dream` command line and the `sd-metadata` JSON,
written in the layout InvokeAI 2.3 wrote and read from files it wrote.

- `Dream`: `"prompt [negative]" -s STEPS -S SEED -W W -H H -C CFG -A SAMPLER` plus `-I FILE
  -f STRENGTH` (img2img), `-G STRENGTH -ft gfpgan` (faces), `-U SCALE STRENGTH` (upscale) and
  `-V SEED:WEIGHT` (variations).
- `sd-metadata`: {model, model_weights, model_hash (full sha256), app_id, app_version, image:
  {prompt: [{prompt, weight}], steps, cfg_scale, seed, width, height, sampler, type,
  variations: [{seed, weight}], postprocessing: [{type, ...}] | null, ...}}. sdtui adds its
  exact request under its own key, "sdtui".
Stdlib only.
"""

from __future__ import annotations

import re
from typing import Any

from sdtui import __version__, samplers
from sdtui.metadata.a1111 import model_name
from sdtui.metadata.parsed import Parsed, bad_value, to_float, to_int
from sdtui.prompt_parts import guide_blend

SDTUI_KEY = "sdtui"
# InvokeAI 2.x's prompt-to-prompt edit, `a cat.swap(dog)`: sdtui reads the text as written.
_SWAP = re.compile(r"\.swap\(")
# Switches InvokeAI 2.x recorded in the `Dream` command line only, never in sd-metadata.
_COMMAND_ONLY = ("--hires_fix",)
SDTUI_VERSION = 2  # 1: the init image was inline base64; 2: inputs are stored once
TOOL = "InvokeAI 2.x"


def _sampler(params: dict[str, Any]) -> str:
    scheduler = str(params.get("scheduler") or "")
    return samplers.dream_name(scheduler) if scheduler in samplers.SAMPLERS else scheduler


def _prompt_with_negative(prompt: str, negative: str) -> str:
    return f"{prompt} [{negative}]" if negative else prompt


def prompt_parts(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt as weighted parts, the negative in `[...]` after the first, as InvokeAI did."""
    prompt = str(params.get("prompt", ""))
    negative = str(params.get("negative_prompt") or "")
    blend = guide_blend(prompt)
    first, *rest = blend if blend and len(blend) > 1 else [(prompt, 1.0)]
    return [{"prompt": _prompt_with_negative(first[0], negative), "weight": first[1]},
            *({"prompt": text, "weight": weight} for text, weight in rest)]


def postprocessing(params: dict[str, Any]) -> list[dict[str, Any]] | None:
    steps: list[dict[str, Any]] = []
    if params.get("gfpgan"):
        steps.append({"type": "gfpgan", "strength": params["gfpgan"]})
    if params.get("upscale"):
        steps.append({"type": "esrgan", "scale": params["upscale"],
                      "strength": params.get("upscale_strength", 1.0)})
    return steps or None


def _variations(params: dict[str, Any]) -> list[dict[str, Any]]:
    if not params.get("variation_amount") or params.get("variation_seed") is None:
        return []
    return [{"seed": params["variation_seed"], "weight": params["variation_amount"]}]


def _input_path(params: dict[str, Any], name: str) -> str | None:
    ref = params.get(name)
    return str(ref.get("path")) if isinstance(ref, dict) and ref.get("path") else None


def sd_metadata(params: dict[str, Any]) -> dict[str, Any]:
    """The `sd-metadata` object for an image sdtui made (its params with inputs stored)."""
    image: dict[str, Any] = {
        "prompt": prompt_parts(params),
        "steps": params.get("steps"),
        "cfg_scale": params.get("cfg"),
        "threshold": 0,
        "perlin": 0,
        "height": params.get("height"),
        "width": params.get("width"),
        "seed": params.get("seed"),
        "seamless": False,
        "hires_fix": False,
        "type": "img2img" if params.get("init_image") else "txt2img",
        "postprocessing": postprocessing(params),
        "sampler": _sampler(params),
        "variations": _variations(params),
    }
    if params.get("init_image"):
        image["strength"] = params.get("strength")
        ref = params["init_image"]
        image["init_img"] = _input_path(params, "init_image")
        image["orig_hash"] = ref.get("sha256") if isinstance(ref, dict) else None
        if _input_path(params, "mask"):
            image["init_mask"] = _input_path(params, "mask")
    sha = params.get("model_sha256")
    return {
        "model": "stable diffusion",
        "model_weights": model_name(params.get("model")),
        "model_hash": sha or None,
        "app_id": "sdtui",
        "app_version": __version__,
        "image": image,
        SDTUI_KEY: {"version": SDTUI_VERSION, "params": params},
    }


def _quote_prompt(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dream_command(params: dict[str, Any]) -> str:
    """The `Dream` chunk: the dream> command line that makes this image."""
    prompt = _prompt_with_negative(str(params.get("prompt", "")),
                                   str(params.get("negative_prompt") or ""))
    switches = [_quote_prompt(prompt), f"-s {params.get('steps')}", f"-S {params.get('seed')}",
                f"-W {params.get('width')}", f"-H {params.get('height')}",
                f"-C {_num(params.get('cfg'))}"]
    init = _input_path(params, "init_image")
    if init:
        switches.append(f"-I {init}")
    switches.append(f"-A {_sampler(params)}")
    if init:
        mask = _input_path(params, "mask")
        switches += [f"-M {mask}"] if mask else []
        switches.append(f"-f {_num(params.get('strength'))}")
    if params.get("gfpgan"):
        switches += [f"-G {_num(params['gfpgan'])}", "-ft gfpgan"]
    if params.get("upscale"):
        switches.append(f"-U {params['upscale']} {_num(params.get('upscale_strength', 1.0))}")
    for variation in _variations(params):
        switches.append(f"-V {variation['seed']}:{_num(variation['weight'])}")
    return " ".join(switches)


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- reading ------------------------------------------------------------------------------------

_NEGATIVE = re.compile(r"\[([^\[\]]*)\]")
_QUOTED_PROMPT = re.compile(r'"((?:\\.|[^"\\])*)"')
_FIRST_SWITCH = re.compile(r"(?:^|\s)(--?[a-zA-Z])")


def split_negative(prompt: str) -> tuple[str, str]:
    """InvokeAI 2.x: text in [brackets] is the negative prompt."""
    negatives = [m.strip() for m in _NEGATIVE.findall(prompt) if m.strip()]
    positive = re.sub(r"\s+", " ", _NEGATIVE.sub(" ", prompt)).strip() if negatives else prompt
    return positive, ", ".join(negatives)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _set_variations(found: Parsed, value: str) -> None:
    pairs = [v for v in value.split(",") if v]
    if len(pairs) != 1 or pairs[0].count(":") != 1:
        found.ignore("-V", value)
        return
    seed, weight = pairs[0].split(":")
    found.params["variation_seed"] = to_int(TOOL, "-V seed", seed)
    found.params["variation_amount"] = to_float(TOOL, "-V weight", weight)


def read_command(text: str, tool: str = "dream") -> Parsed:
    """Request parameters from a `Dream` chunk (the dream> command line)."""
    text = text.strip()
    quoted = _QUOTED_PROMPT.match(text)
    if quoted:
        prompt, rest = _unescape(quoted.group(1)), text[quoted.end():]
    else:
        switch = _FIRST_SWITCH.search(text)
        cut = switch.start(1) if switch else len(text)
        prompt, rest = text[:cut].strip(), text[cut:]
    positive, negative = split_negative(prompt)
    found = Parsed(tool, {"prompt": positive, "negative_prompt": negative})
    tokens = rest.split()
    simple = {"-s": ("steps", to_int), "--steps": ("steps", to_int),
              "-S": ("seed", to_int), "--seed": ("seed", to_int),
              "-W": ("width", to_int), "--width": ("width", to_int),
              "-H": ("height", to_int), "--height": ("height", to_int),
              "-C": ("cfg", to_float), "--cfg_scale": ("cfg", to_float),
              "-f": ("strength", to_float), "--strength": ("strength", to_float),
              "-G": ("gfpgan", to_float), "--facetool_strength": ("gfpgan", to_float)}
    flags_without_value = {"-g", "--grid", "-F", "--fit", "--seamless", "--hires_fix"}
    pos = 0
    while pos < len(tokens):
        switch = tokens[pos]
        value = tokens[pos + 1] if pos + 1 < len(tokens) else ""
        pos += 2
        if switch in simple:
            name, convert = simple[switch]
            found.params[name] = convert(tool, switch, value)
        elif switch in ("-A", "--sampler"):
            found.set_sampler(value)
        elif switch in ("-I", "--init_img"):
            found.params["init_image"] = {"path": value}
        elif switch in ("-M", "--init_mask"):
            found.params["mask"] = {"path": value}
        elif switch in ("-ft", "--facetool"):
            if value != "gfpgan":
                found.ignore(switch, value)
        elif switch in ("-U", "--upscale"):
            found.params["upscale"] = to_int(tool, switch, value)
            if pos < len(tokens) and not tokens[pos].startswith("-"):
                found.params["upscale_strength"] = to_float(tool, switch, tokens[pos])
                pos += 1
        elif switch in ("-V", "--with_variations"):
            _set_variations(found, value)
        elif switch in ("-n", "--iterations"):
            pass  # a batch size; re-running makes one image
        elif switch in flags_without_value:
            pos -= 1
            if switch not in ("-g", "--grid"):
                found.ignore(switch, "on")
        else:
            found.ignore(switch, value)
    if "-cf" in tokens and "gfpgan" in found.params and "-ft" not in tokens:
        # InvokeAI's default face tool with -cf was CodeFormer.
        found.ignore("-ft", "codeformer")
        found.params.pop("gfpgan")
    _note_swap(found)
    return found


def _note_swap(found: Parsed) -> None:
    if _SWAP.search(found.params.get("prompt", "")):
        found.ignored.append("prompt .swap(...) (InvokeAI's prompt-to-prompt edit; the prompt "
                             "is read as plain text)")


def add_command_only(found: Parsed, command: str) -> None:
    """What sd-metadata cannot say but the `Dream` chunk beside it does (InvokeAI 2.x put
    `--hires_fix` there only), added to what `found` cannot honour."""
    if any(item.startswith("hires_fix") for item in found.ignored):
        return
    tokens = command.split()
    found.ignored += [f"{switch}: on" for switch in _COMMAND_ONLY if switch in tokens]


def _typed(found: Parsed, image: dict[str, Any], key: str, kinds: tuple[type, ...]) -> Any:
    value = image.get(key)
    if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)
                              and bool not in kinds):
        raise bad_value(found.tool, f"image.{key}", value,
                        " or ".join(k.__name__ for k in kinds))
    return value


def read_sd_metadata(meta: dict[str, Any]) -> Parsed:
    """Request parameters from InvokeAI 2.x's `sd-metadata` object."""
    found = Parsed(TOOL)
    images = meta.get("images")
    image = meta.get("image")
    if image is None and isinstance(images, list) and images:
        image = images[0]
        if len(images) > 1:
            found.ignore("images", f"{len(images)} (a grid; re-running the first)")
    if not isinstance(image, dict):
        raise bad_value(TOOL, "image", image, "an object")
    params = found.params
    prompt = _typed(found, image, "prompt", (list, str))
    if isinstance(prompt, list):
        parts, negatives = [], []
        for part in prompt:
            if not isinstance(part, dict) or not isinstance(part.get("prompt"), str):
                raise bad_value(TOOL, "image.prompt", part, "a list of {prompt, weight}")
            weight = to_float(TOOL, "image.prompt weight", part.get("weight", 1.0))
            text, negative = split_negative(part["prompt"])
            parts.append((text, weight))
            negatives += [negative] if negative else []
        single = len(parts) == 1 and parts[0][1] == 1.0
        params["prompt"] = parts[0][0] if single else " ".join(f"{t}:{w:g}" for t, w in parts)
        params["negative_prompt"] = ", ".join(negatives)
    else:
        params["prompt"], params["negative_prompt"] = split_negative(prompt or "")
    _note_swap(found)
    for key, name, convert in (("steps", "steps", to_int), ("cfg_scale", "cfg", to_float),
                               ("seed", "seed", to_int), ("width", "width", to_int),
                               ("height", "height", to_int)):
        if image.get(key) is not None:
            params[name] = convert(TOOL, f"image.{key}", image[key])
    sampler = _typed(found, image, "sampler", (str,))
    if sampler:
        found.set_sampler(sampler)
    for key in ("strength", "strength_steps"):
        if image.get(key) is not None and image.get("type") == "img2img":
            params["strength"] = to_float(TOOL, f"image.{key}", image[key])
    init = _typed(found, image, "init_img", (str,))
    if init:
        params["init_image"] = {"path": init, **({"sha256": image["orig_hash"]} if isinstance(
            image.get("orig_hash"), str) else {})}
        mask = _typed(found, image, "init_mask", (str,))
        if mask:
            params["mask"] = {"path": mask}
    elif image.get("type") == "img2img":
        found.ignore("type", "img2img (no init image recorded)")
    variations = _typed(found, image, "variations", (list,)) or []
    if variations:
        first = variations[0]
        if len(variations) > 1 or not isinstance(first, dict):
            found.ignore("variations", variations)
        else:
            params["variation_seed"] = to_int(TOOL, "image.variations seed", first.get("seed"))
            params["variation_amount"] = to_float(TOOL, "image.variations weight",
                                                  first.get("weight"))
    for step in _typed(found, image, "postprocessing", (list,)) or []:
        _read_postprocess(found, step)
    for key in ("seamless", "hires_fix"):
        if image.get(key):
            found.ignore(key, image[key])
    for key in ("threshold", "perlin"):
        if image.get(key):
            found.ignore(key, image[key])
    if isinstance(meta.get("model_weights"), str):
        params["model"] = meta["model_weights"]
    if isinstance(meta.get("model_hash"), str):
        params["model_hash"] = meta["model_hash"]
    return found


def _read_postprocess(found: Parsed, step: Any) -> None:
    kind = step.get("type") if isinstance(step, dict) else None
    if kind == "gfpgan":
        found.params["gfpgan"] = to_float(TOOL, "postprocessing gfpgan strength",
                                          step.get("strength", 1.0))
    elif kind == "esrgan":
        found.params["upscale"] = to_int(TOOL, "postprocessing esrgan scale", step.get("scale"))
        found.params["upscale_strength"] = to_float(TOOL, "postprocessing esrgan strength",
                                                    step.get("strength", 1.0))
    elif isinstance(step, dict):
        details = ", ".join(f"{k} {v}" for k, v in step.items() if k != "type")
        found.ignored.append(f"{kind} postprocessing ({details})")
    else:
        found.ignore("postprocessing", step)
