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
