"""The sampler table: every spelling users paste maps to one sampler and schedule."""

from __future__ import annotations

import pytest

from sdtui import protocol, samplers


@pytest.mark.parametrize(("name", "expected"), [
    ("euler_a", ("euler_a", None)),
    ("Euler a", ("euler_a", None)),
    ("k_euler_a", ("euler_a", None)),
    ("plms", ("pndm", None)),
    ("DPM++ 2M", ("dpmpp_2m", None)),
    ("DPM++ 2M Karras", ("dpmpp_2m", "karras")),
    ("dpmpp_2m_karras", ("dpmpp_2m", "karras")),
    ("k_dpmpp_2m", ("dpmpp_2m", None)),
    ("LMS Karras", ("lms", "karras")),
    ("dpm++-2m", ("dpmpp_2m", None)),
])
def test_every_spelling_names_one_sampler(name, expected):
    assert samplers.parse(name) == expected


def test_a_combined_name_sets_the_schedule_in_a_request():
    req = protocol.request("generate", id="a", prompt="p", scheduler="DPM++ 2M Karras")
    assert (req["scheduler"], req["schedule"]) == ("dpmpp_2m", "karras")


def test_an_explicit_schedule_is_kept():
    req = protocol.request("generate", id="a", prompt="p", scheduler="euler",
                           schedule="Exponential")
    assert (req["scheduler"], req["schedule"]) == ("euler", "exponential")


def test_a_schedule_the_sampler_cannot_apply_is_refused():
    with pytest.raises(protocol.ProtocolError, match="ddim has no karras schedule"):
        protocol.request("generate", id="a", prompt="p", scheduler="ddim", schedule="karras")


def test_every_row_has_distinct_a1111_and_dream_names():
    rows = samplers.SAMPLERS.values()
    assert len({s.a1111 for s in rows}) == len({s.dream for s in rows}) == len(rows)


@pytest.mark.parametrize(("name", "expected"), [
    ("DPM++ SDE Karras", ("dpmpp_sde", "karras")),
    ("k_dpmpp_sde_ka", ("dpmpp_sde", "karras")),
    ("DPM++ 2M SDE", ("dpmpp_2m_sde", None)),
    ("DPM++ 2M SDE Exponential", ("dpmpp_2m_sde", "exponential")),
    ("DPM++ 2M SDE Heun Karras", ("dpmpp_2m_sde_heun", "karras")),
    ("UniPC", ("unipc", None)),
    ("LCM", ("lcm", None)),
    ("k_euler_ancestral", ("euler_a", None)),
    ("Euler Beta", ("euler", "beta")),
])
def test_a1111_names_of_the_new_rows(name, expected):
    assert samplers.parse(name) == expected


@pytest.mark.parametrize("name", ["DPM++ 2S a", "DPM++ 2S a Karras", "k_dpmpp_2s_a",
                                  "DPM++ 3M SDE", "DPM++ 3M SDE Exponential", "DPM fast",
                                  "DPM adaptive", "Restart", "DDIM CFG++"])
def test_samplers_diffusers_cannot_reproduce_are_refused_by_name(name):
    with pytest.raises(samplers.UnknownSampler) as caught:
        samplers.parse(name)
    message = str(caught.value)
    assert "is not supported" in message and "look-alike" in message and "\n" not in message


@pytest.mark.parametrize(("sampler", "expected"), [
    ("DPM++ 2M", "karras"), ("DPM++ SDE", "karras"), ("DPM2 a", "karras"),
    ("DPM++ 2M SDE", "exponential"), ("Euler a", "default"), ("Euler", "default"),
])
def test_automatic_is_the_schedule_a1111_picks_for_the_sampler(sampler, expected):
    req = protocol.request("generate", id="a", prompt="p", scheduler=sampler,
                           schedule="Automatic")
    assert req["schedule"] == expected


def test_uniform_and_explicit_schedules_win_over_a_combined_name():
    assert samplers.resolve("DPM++ 2M Karras", "Uniform") == ("dpmpp_2m", "karras")
    assert samplers.resolve("DPM++ 2M Karras", "exponential") == ("dpmpp_2m", "exponential")
    assert samplers.resolve("DPM++ 2M", None) == ("dpmpp_2m", "default")


def test_schedule_types_without_a_faithful_equivalent_are_refused():
    for label in ("SGM Uniform", "Align Your Steps", "Polyexponential", "KL Optimal"):
        with pytest.raises(samplers.UnknownSampler, match="is not supported"):
            samplers.parse_schedule(label)


@pytest.mark.parametrize("sampler", list(samplers.SAMPLERS))
def test_every_option_reaches_the_diffusers_scheduler(sampler):
    """diffusers ignores an option its class does not know (with a warning): every option of
    every row and schedule must land in the built scheduler's config."""
    import diffusers

    spec = samplers.SAMPLERS[sampler]
    cls = getattr(diffusers, spec.diffusers_class)
    base = diffusers.PNDMScheduler.from_pretrained("sdtui/assets/sd1", subfolder="scheduler")
    for schedule in (samplers.DEFAULT_SCHEDULE, *spec.schedules):
        options = samplers.scheduler_options(sampler, schedule)
        built = cls.from_config(base.config, **options)
        assert {k: built.config[k] for k in options} == options, (sampler, schedule)
        built.set_timesteps(4)


def test_the_readme_table_lists_every_sampler():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("## Samplers", 1)[1].split("\n\n")[1:4]
    rows = [line for part in table for line in part.splitlines() if line.startswith("| `")]
    listed = [row.split("`")[1] for row in rows]
    assert listed == list(samplers.SAMPLERS)
    for row in rows:
        sampler = samplers.SAMPLERS[row.split("`")[1]]
        assert f"| {sampler.a1111} |" in row and sampler.diffusers_class in row
