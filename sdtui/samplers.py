"""The sampler table: every sampler sdtui runs, with each name people use for it.

Stdlib only. The protocol, the worker, the metadata writer and the metadata readers all use
this one table, so a sampler or a spelling is added in one place.

A request names a sampler (`scheduler`) and a noise schedule (`schedule`), as A1111 1.9+ does
with its "Sampler" and "Schedule type" fields. Older combined names ("DPM++ 2M Karras",
"dpmpp_2m_karras") still parse: they imply the schedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SAMPLER = "euler_a"
DEFAULT_SCHEDULE = "default"
# "default": the sampler's own timesteps (A1111's "Uniform"); the others reshape the sigmas.
SCHEDULES = ("default", "karras", "exponential")
SCHEDULE_A1111 = {"default": "Uniform", "karras": "Karras", "exponential": "Exponential"}


class UnknownSampler(ValueError):
    """A sampler or schedule name that is in no column of the table."""


@dataclass(frozen=True)
class Sampler:
    id: str  # the protocol's canonical name
    a1111: str  # A1111's "Sampler" label
    dream: str  # the dream tool's `-A` name
    diffusers_class: str
    options: tuple[tuple[str, object], ...] = ()
    # Schedules the diffusers class can apply besides "default".
    schedules: tuple[str, ...] = ("karras", "exponential")
    aliases: tuple[str, ...] = ()
    # Timestep spacing, pinned so that a model's format (a diffusers folder carries its own
    # scheduler config, a single file ours) never changes the picture: "leading" for DDIM and
    # PLMS as in diffusers' and A1111's SD defaults, "linspace" (A1111's k-diffusion "Uniform")
    # for the others.
    spacing: str = "linspace"


_TABLE = (
    Sampler("ddim", "DDIM", "ddim", "DDIMScheduler", schedules=(), spacing="leading"),
    Sampler("pndm", "PLMS", "plms", "PNDMScheduler", (("skip_prk_steps", True),), schedules=(),
            spacing="leading"),
    Sampler("lms", "LMS", "k_lms", "LMSDiscreteScheduler"),
    Sampler("euler", "Euler", "k_euler", "EulerDiscreteScheduler"),
    Sampler("euler_a", "Euler a", "k_euler_a", "EulerAncestralDiscreteScheduler", schedules=()),
    Sampler("heun", "Heun", "k_heun", "HeunDiscreteScheduler"),
    Sampler("dpm2", "DPM2", "k_dpm_2", "KDPM2DiscreteScheduler"),
    Sampler("dpm2_a", "DPM2 a", "k_dpm_2_a", "KDPM2AncestralDiscreteScheduler"),
    Sampler("dpmpp_2m", "DPM++ 2M", "k_dpmpp_2", "DPMSolverMultistepScheduler",
            aliases=("dpm++_2m", "k_dpmpp_2m")),
)
SAMPLERS: dict[str, Sampler] = {s.id: s for s in _TABLE}


def _key(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


def _spellings() -> dict[str, tuple[str, str | None]]:
    """Every accepted spelling -> (sampler id, the schedule it implies or None)."""
    names: dict[str, tuple[str, str | None]] = {}
    for s in _TABLE:
        for spelling in (s.id, s.a1111, s.dream, *s.aliases):
            names[_key(spelling)] = (s.id, None)
            for schedule in s.schedules:
                label = SCHEDULE_A1111[schedule]
                names[_key(f"{spelling} {label}")] = (s.id, schedule)
                names[_key(f"{spelling}_{schedule}")] = (s.id, schedule)
    return names


_SPELLINGS = _spellings()


def parse(name: str) -> tuple[str, str | None]:
    """A sampler name in any spelling -> (canonical id, the schedule it implies or None)."""
    found = _SPELLINGS.get(_key(name))
    if found is None:
        raise UnknownSampler(
            f"unknown scheduler {name!r}; valid schedulers: {', '.join(SAMPLERS)}"
        )
    return found


def parse_schedule(name: str) -> str:
    """A schedule in our spelling or A1111's ("Karras", "Uniform"); "Automatic" is the
    sampler's default."""
    key = _key(name)
    if key in ("automatic", "auto"):
        return DEFAULT_SCHEDULE
    for schedule, label in SCHEDULE_A1111.items():
        if key in (schedule, _key(label)):
            return schedule
    raise UnknownSampler(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")


def check_combination(sampler: str, schedule: str) -> None:
    if schedule != DEFAULT_SCHEDULE and schedule not in SAMPLERS[sampler].schedules:
        usable = ", ".join(SAMPLERS[sampler].schedules) or "none besides default"
        raise UnknownSampler(
            f"sampler {sampler} has no {schedule} schedule; its schedules: {usable}"
        )


def a1111_label(sampler: str) -> str:
    return SAMPLERS[sampler].a1111


def dream_name(sampler: str) -> str:
    return SAMPLERS[sampler].dream
