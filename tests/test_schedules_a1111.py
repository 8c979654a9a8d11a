"""A1111's "Normal" schedule type against the sigmas sdtui's worker samples with when a request
names it, for SD 1.x, 2.x and SDXL.

A1111's side is its own code: `normal_scheduler` (and `uniform`) of its modules/sd_schedulers.py
(tests/vendor/a1111_schedulers/), run on k-diffusion's DiscreteSchedule, which A1111 wraps each
of these models in (tests/vendor/k_diffusion/, at the commit A1111 installs), over the model's
noise schedule as A1111 holds it, with the sigma range A1111 passes (the model's own ends).
sdtui's side is the production path: the name resolved by `samplers.resolve`, the diffusers
scheduler built by the worker's `build_scheduler` from the family's shipped scheduler config.

Tolerance: 1e-3 relative, for 2 to 150 steps. What is left (4.9e-4 at most, at 150 steps) is
diffusers interpolating sigma linearly between whole timesteps where k-diffusion interpolates
log sigma, and diffusers' float32 betas against ldm's float64 ones. (At 1 step the two differ
outright, for Uniform as for Normal: diffusers' linspace of one timestep is the last, 0;
k-diffusion's is the first.)
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from vendor_loader import load_vendored

from sdtui import samplers
from sdtui.worker.schedulers import build_scheduler

VENDOR = Path(__file__).resolve().parent / "vendor"
ASSETS = Path(samplers.__file__).resolve().parent / "assets"
TOLERANCE = 1e-3
STEPS = (2, 3, 10, 20, 30, 50, 100, 150)
# The noise schedules of the original configs (linear_start, linear_end, timesteps): SD 1.x's
# v1-inference.yaml (CompVis/stable-diffusion), SD 2.x's v2-inference-v.yaml (shipped in
# sdtui/assets/sd2, checked below), SDXL's LegacyDDPMDiscretization defaults
# (Stability-AI/generative-models sgm/modules/diffusionmodules/discretizer.py).
LDM_SCHEDULE = (0.00085, 0.0120, 1000)
FAMILIES = {"sd1": "eps", "sd2": "v", "sdxl": "eps"}


def _not_vendored(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    raise AssertionError("only uniform and normal_scheduler are compared")


def _k_diffusion() -> dict[str, ModuleType]:
    """Stand-ins for k_diffusion.sampling and .utils: the one-liners external.py calls
    (k-diffusion's own), and names sd_schedulers.py only refers to."""
    package = ModuleType("k_diffusion")
    package.__path__ = []
    sampling = ModuleType("k_diffusion.sampling")
    sampling.append_zero = lambda x: torch.cat([x, x.new_zeros([1])])
    sampling.get_sigmas_karras = sampling.get_sigmas_exponential = _not_vendored
    sampling.get_sigmas_polyexponential = _not_vendored
    utils = ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    package.sampling, package.utils = sampling, utils
    return {"k_diffusion": package, "k_diffusion.sampling": sampling,
            "k_diffusion.utils": utils}


def _a1111_modules() -> tuple[ModuleType, ModuleType]:
    stand_ins = _k_diffusion()
    external = load_vendored("k_diffusion.external", VENDOR / "k_diffusion" / "external.py",
                             stand_ins)
    modules, shared = ModuleType("modules"), ModuleType("modules.shared")
    modules.__path__, modules.shared = [], shared
    schedulers = load_vendored("a1111_sd_schedulers",
                               VENDOR / "a1111_schedulers" / "sd_schedulers.py",
                               {**stand_ins, "modules": modules, "modules.shared": shared})
    return external, schedulers


EXTERNAL, A1111 = _a1111_modules()


def ldm_alphas_cumprod(linear_start: float, linear_end: float, timesteps: int) -> torch.Tensor:
    """ldm's make_beta_schedule("linear") and register_schedule (sgm's discretizer is the same):
    computed in float64, held as a float32 buffer, as A1111's model has it."""
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps,
                           dtype=torch.float64) ** 2
    return torch.tensor(np.cumprod(1.0 - betas.numpy(), axis=0), dtype=torch.float32)


def a1111_sigmas(family: str, schedule: str, steps: int) -> np.ndarray:
    """What A1111's get_sigmas gives for this schedule type: its model wrap
    (CompVisDenoiser, or CompVisVDenoiser for v-prediction), sigma_min and sigma_max the wrap's
    own (`use_old_karras_scheduler_sigmas` off, as by default)."""
    denoiser = (EXTERNAL.DiscreteVDDPMDenoiser if FAMILIES[family] == "v"
                else EXTERNAL.DiscreteEpsDDPMDenoiser)
    wrap = denoiser(None, ldm_alphas_cumprod(*LDM_SCHEDULE), quantize=False)
    function = {"normal": A1111.normal_scheduler, "uniform": A1111.uniform}[schedule]
    sigmas = function(n=steps, sigma_min=wrap.sigmas[0].item(),
                      sigma_max=wrap.sigmas[-1].item(), inner_model=wrap, device="cpu")
    return sigmas.double().numpy()


def sdtui_sigmas(family: str, sampler: str, schedule: str, steps: int) -> np.ndarray:
    """The worker's scheduler for this request, from the family's shipped config (as a
    single-file model loads it). A second-order class lists each sigma of its steps twice (or
    beside a midpoint): each step's sigma once."""
    config = json.loads((ASSETS / family / "scheduler" / "scheduler_config.json").read_text())
    name, resolved = samplers.resolve(sampler, schedule)
    scheduler = build_scheduler(config, name, resolved)
    scheduler.set_timesteps(steps)
    sigmas = np.asarray(scheduler.sigmas, dtype=np.float64)
    if getattr(scheduler, "state_in_first_order", None) is not None:
        sigmas = sigmas[np.r_[True, sigmas[1:] != sigmas[:-1]]]
    return sigmas


def relative_gap(ours: np.ndarray, theirs: np.ndarray) -> float:
    if ours.shape != theirs.shape or ours[-1] != theirs[-1]:  # both end at sigma 0, or not
        return float("inf")
    return float(np.max(np.abs(ours[:-1] - theirs[:-1]) / theirs[:-1]))


def test_the_noise_schedule_is_sd2s_shipped_config():
    text = (ASSETS / "sd2" / "v2-inference-v.yaml").read_text()
    assert "linear_start: 0.00085" in text and "linear_end: 0.0120" in text
    assert "timesteps: 1000" in text


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a1111s_normal_is_its_uniform_for_these_models(family):
    """normal_scheduler spans sigma_to_t(sigma_max) to sigma_to_t(sigma_min): the model's first
    and last timestep, so the same linspace as `uniform` (k-diffusion's get_sigmas)."""
    for steps in STEPS:
        assert relative_gap(a1111_sigmas(family, "normal", steps),
                            a1111_sigmas(family, "uniform", steps)) < 1e-6


NORMAL = [label for label in (s.a1111 for s in samplers.SAMPLERS.values())
          if samplers.NORMAL in samplers.SAMPLERS[samplers.parse(label)[0]].schedules]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("sampler", NORMAL)
def test_normal_samples_with_a1111s_normal_sigmas(family, sampler):
    gaps = {steps: relative_gap(sdtui_sigmas(family, sampler, "Normal", steps),
                                a1111_sigmas(family, "normal", steps)) for steps in STEPS}
    assert max(gaps.values()) < TOLERANCE, gaps


def test_the_samplers_that_take_normal_are_the_k_diffusion_spaced_ones():
    assert NORMAL == ["LMS", "Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "DPM++ SDE"]


@pytest.mark.parametrize("sampler", ["DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "UniPC"])
def test_normal_is_refused_where_diffusers_spaces_timesteps_otherwise(sampler):
    """Their diffusers classes' own (linspace) timesteps are not A1111's Normal: refused, with
    why, never run as a look-alike."""
    name = samplers.parse(sampler)[0]
    for family in FAMILIES:
        uniform = sdtui_sigmas(family, sampler, "Uniform", 20)
        assert relative_gap(uniform, a1111_sigmas(family, "normal", 20)) > 0.5
    with pytest.raises(samplers.UnknownSampler) as refused:
        samplers.resolve(name, "Normal")
    cls = samplers.SAMPLERS[name].diffusers_class
    assert str(refused.value) == (
        f"sampler {name} has no normal schedule (diffusers' {cls} stops one step short of the "
        "last timestep, which A1111's Normal reaches); its schedules: karras, exponential, beta")


@pytest.mark.parametrize("family", ["FLUX.1", "SD 3.5", "FLUX.2 Klein"])
def test_normal_is_refused_for_flow_models_in_one_line_naming_simple(family):
    sampler, schedule = samplers.resolve("Euler", "Normal")
    why = samplers.refusal(samplers.FLOW, family, sampler, schedule)
    assert why == (f"schedule type 'Normal' is not supported for {family}: Forge's Normal steps "
                   "down to the model's smallest sigma, where Simple (the scheduler's own) stops "
                   "one step above zero; its schedule: Simple (--schedule simple)")
