"""A request's diffusers scheduler, built so that only the model decides what is the model's.

A scheduler config mixes two kinds of field. The model's training noise schedule and target
(betas, timestep count, prediction type, zero-SNR rescaling) come from the model. Every other
field only changes how it samples, and each one changes the pixels (DDIM's clip_sample clips
x0; steps_offset shifts every timestep). Those are pinned: the sampler row's options
(sdtui.samplers), else Stable Diffusion's own released values, else the class's defaults. So a
diffusers folder whose scheduler_config.json leaves a field out (the class default would then
apply: DDIM clips by default), or sets one from another scheduler, draws the same image as the
same weights in a single file.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import diffusers

from sdtui import samplers

MODEL_FIELDS = frozenset({"num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                          "trained_betas", "prediction_type", "rescale_betas_zero_snr",
                          "timestep_type"})
# Stable Diffusion's released scheduler config (CompVis and A1111 sample the same way).
SD_SAMPLING = {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
               "skip_prk_steps": True}


def pinned_options(cls: type, sampler: str, schedule: str) -> dict[str, Any]:
    """Every sampling field `cls` takes, with the value this sampler and schedule use."""
    params = inspect.signature(cls.__init__).parameters
    pinned = {name: p.default for name, p in params.items()
              if name not in MODEL_FIELDS and p.default is not inspect.Parameter.empty
              and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}
    pinned |= {name: value for name, value in SD_SAMPLING.items() if name in params}
    return pinned | samplers.scheduler_options(sampler, schedule)


# A flow model's scheduler config is all the model's (its shift, fixed or by resolution); what
# only changes how it samples is pinned to FluxPipeline's own sampling: plain shifted sigmas,
# deterministic steps.
FLOW_PINNED = {"use_karras_sigmas": False, "use_exponential_sigmas": False,
               "use_beta_sigmas": False, "invert_sigmas": False, "stochastic_sampling": False}


def build_scheduler(model_config: Mapping[str, Any], sampler: str, schedule: str,
                    table: str = samplers.DIFFUSION) -> Any:
    if table == samplers.FLOW:  # Euler and the Simple schedule are the scheduler's own
        return getattr(diffusers, samplers.FLOW_CLASS).from_config(dict(model_config),
                                                                   **FLOW_PINNED)
    cls = getattr(diffusers, samplers.SAMPLERS[sampler].diffusers_class)
    return cls.from_config(dict(model_config), **pinned_options(cls, sampler, schedule))
