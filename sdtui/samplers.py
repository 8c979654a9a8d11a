"""The sampler table: every sampler sdtui runs, with each name people use for it.

Stdlib only. The protocol, the worker, the metadata writer and the metadata readers all use
this one table, so a sampler or a spelling is added in one place.

A request names a sampler (`scheduler`) and a noise schedule (`schedule`), as A1111 1.9+ does
with its "Sampler" and "Schedule type" fields. Older combined names ("DPM++ 2M Karras",
"dpmpp_2m_karras") still parse: they imply the schedule.

Each row maps an A1111 sampler to the diffusers scheduler that reproduces it, as diffusers'
own table of A1111/k-diffusion equivalents documents it (docs/source/en/api/schedulers/
overview.md), checked against A1111's sampler list (modules/sd_samplers_kdiffusion.py,
sd_samplers_compvis.py, sd_samplers_lcm.py). Samplers diffusers cannot reproduce are in
`_REFUSED`: they are refused with the reason, never replaced by a look-alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SAMPLER = "euler_a"
DEFAULT_SCHEDULE = "default"
# A1111's "Automatic": the schedule A1111 picks for the sampler (its `scheduler` option).
# Resolved to a concrete schedule with the sampler (see `resolve`); never sent to the worker.
AUTOMATIC = "automatic"


@dataclass(frozen=True)
class Schedule:
    id: str
    a1111: str  # A1111's "Schedule type" label
    options: tuple[tuple[str, object], ...] = ()
    # Timestep spacing the schedule needs, or None for the sampler's own. diffusers derives
    # sigma_max/sigma_min of a reshaped schedule from the spaced timesteps; "linspace" spans
    # the model's whole range, as k-diffusion's get_sigmas_karras/_exponential do in A1111.
    spacing: str | None = None


_SCHEDULE_TABLE = (
    # "default": the sampler's own timesteps (A1111's "Uniform").
    Schedule("default", "Uniform"),
    Schedule("karras", "Karras", (("use_karras_sigmas", True),), "linspace"),
    Schedule("exponential", "Exponential", (("use_exponential_sigmas", True),), "linspace"),
    # A1111's beta_scheduler and diffusers' _convert_to_beta: the same formula, alpha=beta=0.6.
    Schedule("beta", "Beta", (("use_beta_sigmas", True),), "linspace"),
    # Forge/ComfyUI's "Simple": flow models only (see FLOW_SAMPLERS).
    Schedule("simple", "Simple"),
    # A1111's normal_scheduler: timesteps evenly spaced from the largest sigma's to the
    # smallest's, which for SD's discrete schedule is the sampler's own linspace spacing (see
    # NORMAL_SAMPLERS; tests/test_schedules_a1111.py checks it against A1111's function).
    Schedule("normal", "Normal"),
)
SCHEDULE_TABLE: dict[str, Schedule] = {s.id: s for s in _SCHEDULE_TABLE}
SCHEDULES = tuple(SCHEDULE_TABLE)
SCHEDULE_A1111 = {s.id: s.a1111 for s in _SCHEDULE_TABLE}
_RESHAPING = ("karras", "exponential", "beta")
NORMAL = "normal"
# Why a sampler's diffusers class cannot give A1111's Normal sigmas, by class.
_NOT_NORMAL = {
    cls: f"diffusers' {cls} stops one step short of the last timestep, which A1111's Normal "
         "reaches"
    for cls in ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
}
# Why the diffusion samplers (SD 1.x/2.x/SDXL) refuse a schedule the table knows.
_DIFFUSION_REFUSED = {"simple": "diffusers' nearest (trailing spacing) rounds timesteps "
                                "differently"}

# A1111 1.9+ schedule types with no faithful diffusers equivalent.
_REFUSED_SCHEDULES = {
    "Polyexponential": "diffusers has no polyexponential sigmas",
    "SGM Uniform": "diffusers' nearest (trailing spacing) picks other timesteps",
    "KL Optimal": "diffusers has no KL-optimal sigmas",
    "Align Your Steps": "diffusers has no Align Your Steps sigmas for this scheduler family",
    "DDIM": "the DDIM schedule type is not a diffusers sigma schedule",
}


class UnknownSampler(ValueError):
    """A sampler or schedule name that is in no column of the table, or that sdtui refuses."""


@dataclass(frozen=True)
class Sampler:
    id: str  # the protocol's canonical name
    a1111: str  # A1111's "Sampler" label
    dream: str  # the dream tool's `-A` name
    diffusers_class: str
    options: tuple[tuple[str, object], ...] = ()
    # Schedules the diffusers class can apply besides "default".
    schedules: tuple[str, ...] = (*_RESHAPING, NORMAL)
    aliases: tuple[str, ...] = ()
    # Timestep spacing, pinned so that a model's format (a diffusers folder carries its own
    # scheduler config, a single file ours) never changes the picture: "leading" for DDIM and
    # PLMS as in diffusers' and A1111's SD defaults (and LCM, diffusers' own), "linspace"
    # (A1111's k-diffusion "Uniform") for the others.
    spacing: str = "linspace"
    # The schedule A1111 1.9+ uses for this sampler when its Schedule type is "Automatic".
    automatic: str = DEFAULT_SCHEDULE


_SDE = ("algorithm_type", "sde-dpmsolver++")
_TABLE = (
    Sampler("ddim", "DDIM", "ddim", "DDIMScheduler", schedules=(), spacing="leading"),
    Sampler("pndm", "PLMS", "plms", "PNDMScheduler", (("skip_prk_steps", True),), schedules=(),
            spacing="leading"),
    Sampler("lms", "LMS", "k_lms", "LMSDiscreteScheduler"),
    Sampler("euler", "Euler", "k_euler", "EulerDiscreteScheduler"),
    Sampler("euler_a", "Euler a", "k_euler_a", "EulerAncestralDiscreteScheduler",
            schedules=(NORMAL,), aliases=("k_euler_ancestral",)),
    Sampler("heun", "Heun", "k_heun", "HeunDiscreteScheduler"),
    Sampler("dpm2", "DPM2", "k_dpm_2", "KDPM2DiscreteScheduler", automatic="karras"),
    Sampler("dpm2_a", "DPM2 a", "k_dpm_2_a", "KDPM2AncestralDiscreteScheduler",
            automatic="karras"),
    Sampler("dpmpp_2m", "DPM++ 2M", "k_dpmpp_2", "DPMSolverMultistepScheduler",
            schedules=_RESHAPING, aliases=("dpm++_2m", "k_dpmpp_2m"), automatic="karras"),
    # k-diffusion's sample_dpmpp_sde (Brownian-tree noise, needs torchsde). diffusers' table
    # names DPMSolverSinglestepScheduler, a deterministic ODE solver; DPMSolverSDEScheduler is
    # its port of this very sampler.
    Sampler("dpmpp_sde", "DPM++ SDE", "k_dpmpp_sde", "DPMSolverSDEScheduler",
            aliases=("dpm++_sde",), automatic="karras"),
    Sampler("dpmpp_2m_sde", "DPM++ 2M SDE", "k_dpmpp_2m_sde", "DPMSolverMultistepScheduler",
            (_SDE,), schedules=_RESHAPING, aliases=("dpm++_2m_sde",), automatic="exponential"),
    Sampler("dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun", "k_dpmpp_2m_sde_heun",
            "DPMSolverMultistepScheduler", (_SDE, ("solver_type", "heun")),
            schedules=_RESHAPING, aliases=("dpm++_2m_sde_heun",), automatic="exponential"),
    # A1111's UniPC defaults (its options uni_pc_variant, uni_pc_order, uni_pc_lower_order_final).
    # Like A1111's UniPC it stops at the smallest sigma: diffusers' bh1 step to sigma 0 divides
    # by an infinite log-SNR step and returns NaN.
    Sampler("unipc", "UniPC", "unipc", "UniPCMultistepScheduler",
            (("solver_type", "bh1"), ("solver_order", 3), ("lower_order_final", True),
             ("final_sigmas_type", "sigma_min")), schedules=_RESHAPING),
    Sampler("lcm", "LCM", "lcm", "LCMScheduler", schedules=(), spacing="leading"),
)
SAMPLERS: dict[str, Sampler] = {s.id: s for s in _TABLE}
# A1111 runs these on their own timesteps whatever its Schedule type says (DDIM and PLMS in its
# sd_samplers_timesteps.py), so a schedule named with them asks for nothing there.
OWN_TIMESTEPS = ("ddim", "pndm")

# A1111 samplers diffusers cannot reproduce: label, other spellings, why.
_REFUSED = (
    ("DPM++ 2S a", ("k_dpmpp_2s_a", "dpmpp_2s_a", "dpmpp_2s_ancestral"),
     "diffusers has no DPM++ 2S ancestral scheduler"),
    ("DPM++ 3M SDE", ("k_dpmpp_3m_sde", "dpmpp_3m_sde"),
     "diffusers' third-order SDE solver differs from k-diffusion's in its second-derivative "
     "term"),
    ("DPM fast", ("k_dpm_fast", "dpm_fast"), "diffusers has no DPM-Solver fast scheduler"),
    ("DPM adaptive", ("k_dpm_ad", "dpm_adaptive"), "diffusers has no adaptive DPM-Solver"),
    ("Restart", ("restart",), "diffusers has no Restart sampler"),
    ("DDIM CFG++", ("ddim_cfgpp", "ddim_cfg++"), "diffusers has no CFG++ sampler"),
)


def _key(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


# Suffixes of combined names: A1111's labels ("Karras") and the short ones ("_ka", "_exp").
def _schedule_suffixes(schedule: str) -> tuple[str, ...]:
    short = {"karras": ("ka",), "exponential": ("exp",)}.get(schedule, ())
    return (SCHEDULE_A1111[schedule], schedule, *short)


def _spellings() -> dict[str, tuple[str, str | None]]:
    """Every accepted spelling -> (sampler id, the schedule it implies or None)."""
    names: dict[str, tuple[str, str | None]] = {}
    for s in _TABLE:
        for spelling in (s.id, s.a1111, s.dream, *s.aliases):
            names[_key(spelling)] = (s.id, None)
            for schedule in (x for x in s.schedules if x in _RESHAPING):  # A1111's old names
                for suffix in _schedule_suffixes(schedule):
                    names[_key(f"{spelling} {suffix}")] = (s.id, schedule)
    return names


def _refusals() -> dict[str, str]:
    """Every spelling of a refused sampler (with any schedule suffix) -> the one-line reason."""
    refused = {}
    for label, aliases, why in _REFUSED:
        reason = f"sampler {label!r} is not supported: {why}, so sdtui will not run a look-alike"
        for spelling in (label, *aliases):
            refused[_key(spelling)] = reason
            for schedule in _RESHAPING:
                for suffix in _schedule_suffixes(schedule):
                    refused[_key(f"{spelling} {suffix}")] = reason
    return refused


_SPELLINGS = _spellings()
_REFUSALS = _refusals()


def parse(name: str) -> tuple[str, str | None]:
    """A sampler name in any spelling -> (canonical id, the schedule it implies or None)."""
    key = _key(name)
    found = _SPELLINGS.get(key)
    if found is not None:
        return found
    if key in _REFUSALS:
        raise UnknownSampler(f"{_REFUSALS[key]}; pick another, e.g. DPM++ 2M or Euler a")
    raise UnknownSampler(f"unknown scheduler {name!r}; valid schedulers: {', '.join(SAMPLERS)}")


def parse_schedule(name: str) -> str:
    """A schedule in our spelling or A1111's ("Karras", "Uniform"). A1111's "Automatic" is
    returned as AUTOMATIC: what it means depends on the sampler (see `resolve`)."""
    key = _key(name)
    if key in (AUTOMATIC, "auto"):
        return AUTOMATIC
    for schedule, label in SCHEDULE_A1111.items():
        if key in (schedule, _key(label)):
            return schedule
    for label, why in _REFUSED_SCHEDULES.items():
        if key == _key(label):
            raise UnknownSampler(f"schedule type {label!r} is not supported: {why}; "
                                 f"valid schedules: {', '.join(SCHEDULES)}")
    raise UnknownSampler(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")


def check_combination(sampler: str, schedule: str) -> None:
    if schedule in _DIFFUSION_REFUSED:
        return  # a flow model's schedule: which family runs it decides (see `refusal`)
    if schedule != DEFAULT_SCHEDULE and schedule not in SAMPLERS[sampler].schedules:
        usable = ", ".join(SAMPLERS[sampler].schedules) or "none besides default"
        why = _NOT_NORMAL.get(SAMPLERS[sampler].diffusers_class) if schedule == NORMAL else None
        raise UnknownSampler(
            f"sampler {sampler} has no {schedule} schedule" + (f" ({why})" if why else "")
            + f"; its schedules: {usable}"
        )


def resolve(sampler_name: str, schedule_name: str | None = None) -> tuple[str, str]:
    """A request's sampler and schedule, in any spellings -> (sampler id, concrete schedule).

    An explicit schedule wins over one a combined name implies; "Automatic" becomes the
    schedule A1111 uses for that sampler. Raises UnknownSampler with one line."""
    sampler, implied = parse(sampler_name)
    schedule = parse_schedule(schedule_name) if schedule_name else DEFAULT_SCHEDULE
    if schedule == DEFAULT_SCHEDULE and implied:
        schedule = implied
    if schedule == AUTOMATIC:
        schedule = SAMPLERS[sampler].automatic
    check_combination(sampler, schedule)
    return sampler, schedule


def scheduler_options(sampler: str, schedule: str) -> dict[str, object]:
    """The keyword arguments the sampler's diffusers class takes for this schedule. Every
    sigma flag the class has is set, so a model's own scheduler config (a diffusers folder
    may carry use_karras_sigmas) cannot change the schedule asked for."""
    spec = SAMPLERS[sampler]
    options = dict(spec.options)
    if set(spec.schedules) & set(_RESHAPING):  # its class has the sigma flags
        for other in _RESHAPING:
            options |= {flag: False for flag, _ in SCHEDULE_TABLE[other].options}
    options |= dict(SCHEDULE_TABLE[schedule].options)
    options["timestep_spacing"] = SCHEDULE_TABLE[schedule].spacing or spec.spacing
    return options


def a1111_label(sampler: str) -> str:
    return SAMPLERS[sampler].a1111


def dream_name(sampler: str) -> str:
    return SAMPLERS[sampler].dream


# --- flow-matching families (FLUX.1) ----------------------------------------------------------
# A rectified-flow model samples with diffusers' FlowMatchEulerDiscreteScheduler, with the
# model's own shift (fixed, or by resolution for [dev]) from its scheduler config. Forge's and
# ComfyUI's "Simple" schedule picks the model's shifted sigmas at t = 1, 1 - 1/n, ..., 1/n:
# exactly the linspace(1, 1/n) FluxPipeline shifts, so Simple is the scheduler's own.
DIFFUSION, FLOW = "diffusion", "flow"
FLOW_CLASS = "FlowMatchEulerDiscreteScheduler"
FLOW_SAMPLERS = ("euler",)
# The sampler a request that names none runs, by the family's sampler table.
DEFAULT_SAMPLERS = {DIFFUSION: DEFAULT_SAMPLER, FLOW: FLOW_SAMPLERS[0]}
FLOW_SCHEDULE = "simple"
FLOW_SCHEDULES = (DEFAULT_SCHEDULE, FLOW_SCHEDULE)
_FLOW_REFUSED_SCHEDULES = {
    "karras": "Forge's Karras takes the model's sigma range, diffusers' the shifted schedule's",
    "exponential": "Forge's Exponential takes the model's sigma range, diffusers' the shifted "
                   "schedule's",
    "beta": "diffusers' beta sigmas interpolate between the shifted schedule's ends, Forge's "
            "pick the shifted schedule at beta-spaced timesteps",
    NORMAL: "Forge's Normal steps down to the model's smallest sigma, where Simple (the "
            "scheduler's own) stops one step above zero",
}


def refusal(table: str, label: str, sampler: str, schedule: str) -> str | None:
    """Why a model of `label` whose family samples from `table` cannot run this (resolved)
    sampler and schedule, in one line with the ones it can, or None."""
    if table != FLOW:
        if schedule in _DIFFUSION_REFUSED:
            return (f"schedule type {SCHEDULE_A1111[schedule]!r} is not supported for {label}: "
                    f"{_DIFFUSION_REFUSED[schedule]}; valid schedules: "
                    f"{', '.join(s for s in SCHEDULES if s not in _DIFFUSION_REFUSED)}")
        return None
    if sampler not in FLOW_SAMPLERS:
        return (f"{label} is a flow-matching model: it runs the Euler sampler only, not "
                f"{a1111_label(sampler)}; pass --scheduler euler (schedule Simple)")
    if schedule not in FLOW_SCHEDULES:
        why = _FLOW_REFUSED_SCHEDULES.get(schedule, "diffusers has no such flow schedule")
        return (f"schedule type {SCHEDULE_A1111[schedule]!r} is not supported for {label}: "
                f"{why}; its schedule: Simple (--schedule simple)")
    return None
