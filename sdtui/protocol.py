"""The wire protocol between the client and the worker. Stdlib only: both sides import it.

One JSON object per line, each with a "type". Every message is checked against its schema:
unknown fields, missing required fields, wrong types and out-of-range values are rejected
with a message that names the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdtui import loras, samplers

# 2: `info` names the running request's parameters (`request`), for a client that adopts it.
PROTOCOL_VERSION = 2

# Canonical sampler names, in the order they are listed to users (the table: sdtui.samplers).
SCHEDULERS = tuple(samplers.SAMPLERS)
SCHEDULES = samplers.SCHEDULES
DEFAULT_SCHEDULER = samplers.DEFAULT_SAMPLER
DEFAULT_SCHEDULE = samplers.DEFAULT_SCHEDULE
# The steps of a request that names none, where the model's `ready` gives no default_steps
# (Stable Diffusion's).
DEFAULT_STEPS = 30
# The cfg of a request that names none, where the model's `ready` gives no default_cfg.
DEFAULT_CFG = 7.5

MAX_SEED = 2**32 - 1
MAX_LINE_BYTES = 64 * 1024 * 1024


class ProtocolError(ValueError):
    """A message that does not follow the protocol. `code` goes into the error event."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


def normalize_scheduler(name: str) -> str:
    """The canonical sampler id for any accepted spelling (A1111's, the guide's, ours)."""
    try:
        return samplers.parse(name)[0]
    except samplers.UnknownSampler as exc:
        raise ProtocolError(str(exc)) from None


# --- field checks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    check: Callable[[str, Any], Any] | None = None
    nullable: bool = False


def _int_range(lo: int, hi: int, multiple: int = 1) -> Callable[[str, Any], Any]:
    def check(name: str, value: int) -> int:
        if not lo <= value <= hi:
            raise ProtocolError(f"{name} must be from {lo} to {hi}, got {value}")
        if value % multiple:
            raise ProtocolError(f"{name} must be a multiple of {multiple}, got {value}")
        return value

    return check


def _float_range(lo: float, hi: float) -> Callable[[str, Any], Any]:
    def check(name: str, value: float) -> float:
        value = float(value)
        if not lo <= value <= hi:
            raise ProtocolError(f"{name} must be from {lo:g} to {hi:g}, got {value:g}")
        return value

    return check


def _text(max_len: int, *, non_empty: bool = False) -> Callable[[str, Any], Any]:
    def check(name: str, value: str) -> str:
        if non_empty and not value.strip():
            raise ProtocolError(f"{name} must not be empty")
        if len(value) > max_len:
            raise ProtocolError(f"{name} is longer than {max_len} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # bytes Python could not decode (argv, stdin)
            code = ord(value[exc.start])
            what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "a surrogate"
            raise ProtocolError(f"{name} is not valid UTF-8 text ({what} at character "
                                f"{exc.start + 1})") from None
        return value

    return check


def _scheduler(name: str, value: str) -> str:
    return normalize_scheduler(value)


def _schedule(name: str, value: str) -> str:
    try:
        return samplers.parse_schedule(value)
    except samplers.UnknownSampler as exc:
        raise ProtocolError(str(exc)) from None


def _one_of(*choices: Any) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            valid = ", ".join(str(c) for c in choices)
            raise ProtocolError(f"{name} must be one of {valid}, got {json.dumps(value)[:40]}")
        return value

    return check


# Magic numbers of the init image formats a user may send (PNG, JPEG).
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
MAX_INIT_IMAGE_BYTES = 32 * 1024 * 1024


def _init_image(name: str, value: str) -> str:
    if len(value) * 3 // 4 > MAX_INIT_IMAGE_BYTES:
        raise ProtocolError(f"{name} is larger than {MAX_INIT_IMAGE_BYTES // 2**20} MiB")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{name} must be a base64-encoded PNG or JPEG image") from None
    if not data.startswith(_IMAGE_MAGIC):
        raise ProtocolError(f"{name} is not a PNG or JPEG image")
    return value


_ID = Field(str, required=True, check=_text(64, non_empty=True))
_INT = (int,)
_NUM = (int, float)

GENERATE_FIELDS: dict[str, Field] = {
    "id": _ID,
    "prompt": Field(str, required=True, check=_text(20_000, non_empty=True)),
    "negative_prompt": Field(str, default="", check=_text(20_000)),
    # No steps or sampler (null) means the model's own: 30 steps of Euler a for Stable
    # Diffusion, Euler for FLUX.1 at 4 steps ([schnell]) or 28 ([dev]); see with_model_defaults.
    "steps": Field(_INT, default=None, check=_int_range(1, 150), nullable=True),
    # No cfg (null) means the model's own: 7.5, FLUX.2 [klein] base 4; see with_model_defaults.
    "cfg": Field(_NUM, default=None, check=_float_range(0.0, 50.0), nullable=True),
    # The guidance strength a guidance-distilled model (FLUX.1 [dev]) takes as an input, in
    # place of cfg; null means the model's own default (3.5). Other models refuse it.
    "guidance": Field(_NUM, default=None, check=_float_range(0.0, 100.0), nullable=True),
    # No size (null) means the model's own: 1024 for SDXL, 768 for SD 2.x v-prediction, 512
    # otherwise; the worker resolves it and the image's params record what ran.
    "width": Field(_INT, default=None, check=_int_range(64, 2048, 8), nullable=True),
    "height": Field(_INT, default=None, check=_int_range(64, 2048, 8), nullable=True),
    "seed": Field(_INT, default=None, check=_int_range(0, MAX_SEED), nullable=True),
    "scheduler": Field(str, default=None, check=_scheduler, nullable=True),
    # The noise schedule (A1111's "Schedule type"); a combined name such as
    # "DPM++ 2M Karras" in `scheduler` implies it.
    "schedule": Field(str, default=DEFAULT_SCHEDULE, check=_schedule),
    "count": Field(_INT, default=1, check=_int_range(1, 16)),
    "preview_every": Field(_INT, default=5, check=_int_range(0, 150)),
    # img2img (the guide's -I/-f): the init image travels in the request, base64.
    "init_image": Field(str, default=None, check=_init_image, nullable=True),
    # Inpainting (the guide's -M): which part of init_image to repaint, an image of the same
    # kind. White repaints and black keeps; a mask with transparency repaints its transparent
    # part, as the guide's -M did.
    "mask": Field(str, default=None, check=_init_image, nullable=True),
    "strength": Field(_NUM, default=0.75, check=_float_range(0.0, 1.0)),
    "fit": Field(str, default="resize", check=_one_of("resize", "crop")),
    # Face restoration with GFPGAN (-G): 0 is off.
    "gfpgan": Field(_NUM, default=0.0, check=_float_range(0.0, 1.0)),
    # Real-ESRGAN upscaling (-U 2|4 strength); strength blends with a plain resize.
    "upscale": Field(_INT, default=None, check=_one_of(2, 4), nullable=True),
    "upscale_strength": Field(_NUM, default=0.75, check=_float_range(0.0, 1.0)),
    # Variations (-v/-V): noise slerped from seed towards variation_seed.
    "variation_amount": Field(_NUM, default=0.0, check=_float_range(0.0, 1.0)),
    "variation_seed": Field(_INT, default=None, check=_int_range(0, MAX_SEED), nullable=True),
    # A grid PNG of the batch (-g); the client makes it, the worker ignores it.
    "grid": Field(bool, default=False),
}

# The fields that carry an input image (base64 here); saved images record a stored copy instead.
INPUT_IMAGE_FIELDS = tuple(name for name, f in GENERATE_FIELDS.items() if f.check is _init_image)

REQUEST_SCHEMAS: dict[str, dict[str, Field]] = {
    "generate": GENERATE_FIELDS,
    "cancel": {"id": _ID},
    "info": {},
    "fetch": {},
    "ack": {"id": _ID, "index": Field(_INT, default=None, check=_int_range(0, 15), nullable=True)},
}

_B64 = Field(str, required=True)
EVENT_SCHEMAS: dict[str, dict[str, Field]] = {
    "ready": {
        "protocol": Field(_INT, required=True),
        "model": Field(str, required=True),
        "format": Field(str, required=True),
        # The model family ("sd1", "sd2", "sdxl"), detected from the weights' key layout.
        "family": Field(str, default=None, nullable=True),
        # A 9-channel inpainting UNet: it needs an init image and a mask.
        "inpainting": Field(bool, default=False),
        "prediction": Field(str, default="epsilon", check=_one_of("epsilon", "v_prediction")),
        # Width and height of a request that names none (1024 for SDXL, 768 for SD 2.x v).
        "default_size": Field(_INT, default=None, nullable=True),
        # Width and height must be multiples of this (16 for FLUX.1's packed latents).
        "size_multiple": Field(_INT, default=8),
        # "cfg" (classifier-free, a negative prompt applies), "embedded" (FLUX.1 [dev]: the
        # request's guidance) or "none" (FLUX.1 [schnell]).
        "guidance": Field(str, default="cfg", check=_one_of("cfg", "embedded", "none")),
        "default_steps": Field(_INT, default=None, nullable=True),
        "default_cfg": Field(_NUM, default=None, nullable=True),
        # Which sampler table it runs (sdtui.samplers): "diffusion", or "flow" (FLUX.1).
        "sampling": Field(str, default="diffusion", check=_one_of("diffusion", "flow")),
        "family_label": Field(str, default=None, nullable=True),  # for messages: "FLUX.1"
        # What the worker noticed while loading, e.g. tensors no component uses.
        "warnings": Field(list, default=None, nullable=True),
        "device": Field(str, required=True),
        "dtype": Field(str, required=True),
        # Where the components sit on a GPU (text encoders offloaded or not), in one line.
        "memory": Field(str, default=None, nullable=True),
        "torch": Field(str, required=True),
        "diffusers": Field(str, required=True),
        "load_seconds": Field(_NUM, required=True),
        # The LoRA files beside the model ({name, path, metadata}) and the Real-ESRGAN weights
        # ({scale, path}), as found when it loaded (the API lists them).
        "loras": Field(list, default=None, nullable=True),
        "upscalers": Field(list, default=None, nullable=True),
    },
    "progress": {
        "id": _ID,
        "index": Field(_INT, required=True),
        "step": Field(_INT, required=True),
        "total": Field(_INT, required=True),
    },
    "preview": {
        "id": _ID,
        "index": Field(_INT, required=True),
        "step": Field(_INT, required=True),
        "png": _B64,
    },
    "image": {
        "id": _ID,
        "index": Field(_INT, required=True),
        "seed": Field(_INT, required=True),
        "png": _B64,
        "params": Field(dict, required=True),
        "seconds": Field(_NUM, default=None, nullable=True),
        # True when the image is sent again in answer to `fetch`.
        "recovered": Field(bool, default=False),
    },
    "done": {
        "id": _ID,
        "seconds": Field(_NUM, required=True),
        "images": Field(_INT, default=0),
        "cancelled": Field(bool, default=False),
    },
    "error": {
        "id": Field(str, required=True, nullable=True),
        "code": Field(str, required=True),
        "message": Field(str, required=True),
        # For model_invalid: the family the model was detected as, when it was.
        "family": Field(str, default=None, nullable=True),
    },
    "log": {
        "level": Field(str, default="info"),
        "message": Field(str, required=True),
    },
    # Answer to `info`: what the worker is doing now.
    "info": {
        "busy": Field(str, default=None, nullable=True),
        # The busy request's parameters (its input images left out).
        "request": Field(dict, default=None, nullable=True),
        "queued": Field(_INT, default=0),
        "unacked": Field(_INT, default=0),
        "uptime": Field(_NUM, required=True),
        # The `ready` event's fields, for a client that attached after it was sent.
        "ready": Field(dict, required=True),
    },
    # Answer to `fetch`, after the recovered `image` events.
    "fetched": {"count": Field(_INT, required=True)},
}


def _validate(obj: Any, schemas: dict[str, dict[str, Field]], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ProtocolError(f"a {what} must be a JSON object", code="malformed")
    kind = obj.get("type")
    if kind not in schemas:
        valid = ", ".join(schemas)
        raise ProtocolError(f"unknown {what} type {kind!r}; valid types: {valid}")
    schema = schemas[kind]
    unknown = sorted(set(obj) - set(schema) - {"type"})
    if unknown:
        raise ProtocolError(f"{kind}: unknown field(s) {', '.join(unknown)}")
    out: dict[str, Any] = {"type": kind}
    for name, field in schema.items():
        if name not in obj:
            if field.required:
                raise ProtocolError(f"{kind}: missing field {name!r}")
            out[name] = field.default
            continue
        value = obj[name]
        if value is None:
            if not field.nullable:
                raise ProtocolError(f"{kind}: {name} must not be null")
            out[name] = None
            continue
        kinds = field.kind if isinstance(field.kind, tuple) else (field.kind,)
        # bool is an int in Python; a JSON true is never a number here.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ProtocolError(f"{kind}: {name} must be {names}, got {json.dumps(value)[:40]}")
        if field.check:
            try:
                value = field.check(name, value)
            except ProtocolError as exc:
                raise ProtocolError(f"{kind}: {exc}") from None
        out[name] = value
    return out


def _check_generate(req: dict[str, Any], raw: dict[str, Any]) -> None:
    try:
        if req["scheduler"] is None:  # the model's sampler, whose Automatic is its own
            if req["schedule"] == samplers.AUTOMATIC:
                req["schedule"] = DEFAULT_SCHEDULE
        else:
            req["scheduler"], req["schedule"] = samplers.resolve(
                raw.get("scheduler") or req["scheduler"], req["schedule"])
    except samplers.UnknownSampler as exc:
        raise ProtocolError(f"generate: {exc}") from None
    if req["init_image"] and req["variation_amount"]:
        raise ProtocolError("generate: variations apply to text-to-image only; "
                            "drop init_image or set variation_amount to 0")
    if req["mask"] and not req["init_image"]:
        raise ProtocolError("generate: mask needs the image it masks: send init_image "
                            "with it (--init-image)")
    try:
        loras.parse_prompt(req["prompt"], req["negative_prompt"])
    except loras.LoraSyntaxError as exc:
        raise ProtocolError(f"generate: {exc}") from None


def model_refusal(ready: dict[str, Any], req: dict[str, Any]) -> str | None:
    """Why the model its `ready` event describes cannot run this generate request, as one line,
    or None. The worker refuses with it; a client checks it before sending anything."""
    if ready.get("inpainting") and not (req.get("init_image") and req.get("mask")):
        return ("this model is an inpainting checkpoint (its UNet takes 9 input channels): it "
                "needs an init image and a mask; pass --init-image FILE --mask FILE")
    return _family_refusal(ready, req)


def with_model_defaults(ready: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
    """The request with what it leaves to the model (null steps, cfg, sampler) filled in from
    the model's `ready`: its default steps and cfg and its family's sampler."""
    table = ready.get("sampling") or samplers.DIFFUSION
    cfg = req.get("cfg")
    return {**req, "steps": req.get("steps") or ready.get("default_steps") or DEFAULT_STEPS,
            "cfg": cfg if cfg is not None else ready.get("default_cfg") or DEFAULT_CFG,
            "scheduler": req.get("scheduler") or samplers.DEFAULT_SAMPLERS[table]}


def _family_refusal(ready: dict[str, Any], req: dict[str, Any]) -> str | None:
    """What a model's family cannot take: its size multiple, its samplers, its guidance."""
    if not req.get("scheduler"):  # the family's sampler: does it have the schedule asked for?
        req = with_model_defaults(ready, req)
        try:
            samplers.check_combination(req["scheduler"], req.get("schedule") or DEFAULT_SCHEDULE)
        except samplers.UnknownSampler as exc:
            return str(exc)
    label = ready.get("family_label") or "this model"
    multiple = ready.get("size_multiple") or 8
    for side in ("width", "height"):
        if req.get(side) and req[side] % multiple:
            return (f"{label} needs a {side} that is a multiple of {multiple}, got {req[side]}; "
                    f"pass --{side} {req[side] // multiple * multiple or multiple}")
    why = samplers.refusal(ready.get("sampling") or samplers.DIFFUSION, label,
                           req["scheduler"],
                           req.get("schedule") or DEFAULT_SCHEDULE)
    if why:
        return why
    guidance = ready.get("guidance") or "cfg"
    if req.get("guidance") is not None and guidance != "embedded":
        why = ("it takes no guidance (timestep-distilled)" if guidance == "none"
               else "it uses cfg (--cfg), not embedded guidance")
        return f"--guidance does not apply to {label}: {why}; drop --guidance"
    if guidance != "cfg" and (req.get("negative_prompt") or "").strip():
        return (f"{label} takes no negative prompt (it has no classifier-free guidance); drop "
                f"--negative-prompt")
    return None


def validate_request(obj: Any) -> dict[str, Any]:
    req = _validate(obj, REQUEST_SCHEMAS, "request")
    if req["type"] == "generate":
        _check_generate(req, obj)
    return req


def validate_event(obj: Any) -> dict[str, Any]:
    return _validate(obj, EVENT_SCHEMAS, "event")


def _decode(line: bytes | str) -> Any:
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError("line too long", code="malformed")
    try:
        return json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}", code="malformed") from None


def parse_request(line: bytes | str) -> dict[str, Any]:
    return validate_request(_decode(line))


def parse_event(line: bytes | str) -> dict[str, Any]:
    return validate_event(_decode(line))


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def request(kind: str, **fields: Any) -> dict[str, Any]:
    """Build and validate a request, filling in defaults."""
    return validate_request({"type": kind, **fields})


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return validate_event({"type": kind, **fields})
