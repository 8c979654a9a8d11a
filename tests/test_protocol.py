"""The wire protocol: every field validated, clear messages, unknown fields rejected."""

import json

import pytest

from sdtui import protocol
from sdtui.protocol import ProtocolError


def gen(**fields):
    return protocol.parse_request(json.dumps({"type": "generate", "id": "r1", "prompt": "a cat",
                                              **fields}))


def test_generate_fills_defaults():
    req = gen()
    assert req["count"] == 1
    assert req["width"] is None and req["height"] is None  # the model's own size
    assert req["steps"] is None and req["scheduler"] is None  # the model's own
    assert req["seed"] is None


SD_READY = {"sampling": "diffusion", "default_steps": 30}
FLUX_READY = {"sampling": "flow", "default_steps": 4, "family_label": "FLUX.1",
              "size_multiple": 16, "guidance": "none"}


def test_steps_and_sampler_not_given_are_the_models():
    assert {k: protocol.with_model_defaults(SD_READY, gen())[k] for k in ("steps", "scheduler")
            } == {"steps": 30, "scheduler": "euler_a"}
    assert {k: protocol.with_model_defaults(FLUX_READY, gen())[k]
            for k in ("steps", "scheduler")} == {"steps": 4, "scheduler": "euler"}
    given = gen(steps=9, scheduler="Euler a")
    assert {k: protocol.with_model_defaults(FLUX_READY, given)[k]
            for k in ("steps", "scheduler")} == {"steps": 9, "scheduler": "euler_a"}


def test_a_flux_model_takes_a_request_that_names_no_sampler():
    assert protocol.model_refusal(FLUX_READY, gen()) is None
    assert "runs the Euler sampler only" in protocol.model_refusal(
        FLUX_READY, gen(scheduler="euler_a"))
    # The model's sampler still has to have the schedule asked for.
    assert "has no karras schedule" in protocol.model_refusal(SD_READY, gen(schedule="karras"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": 500}, "width must be a multiple of 8, got 500"),
        ({"height": 4096}, "height must be from 64 to 2048, got 4096"),
        ({"width": 56}, "width must be from 64 to 2048"),
        ({"steps": 0}, "steps must be from 1 to 150, got 0"),
        ({"steps": 151}, "steps must be from 1 to 150"),
        ({"count": 17}, "count must be from 1 to 16"),
        ({"seed": -1}, "seed must be from 0 to 4294967295"),
        ({"steps": "30"}, "steps must be int"),
        ({"steps": True}, "steps must be int"),
        ({"prompt": "   "}, "prompt must not be empty"),
        ({"bogus": 1}, "unknown field(s) bogus"),
    ],
)
def test_generate_rejects_bad_values_with_a_clear_message(fields, message):
    with pytest.raises(ProtocolError, match=None) as info:
        gen(**fields)
    assert message in str(info.value)


def test_unknown_scheduler_lists_the_valid_ones():
    with pytest.raises(ProtocolError) as info:
        gen(scheduler="k_warp")
    text = str(info.value)
    assert "k_warp" in text
    for name in protocol.SCHEDULERS:
        assert name in text


@pytest.mark.parametrize(("alias", "canonical"),
                         [("k_lms", "lms"), ("plms", "pndm"), ("K_EULER_A", "euler_a"),
                          ("dpm++-2m", "dpmpp_2m"), ("ddim", "ddim")])
def test_guide_sampler_names_map_to_schedulers(alias, canonical):
    assert gen(scheduler=alias)["scheduler"] == canonical


def test_malformed_lines_get_the_malformed_code():
    for line in (b"not json", b"[1,2]", b"\xff\xfe"):
        with pytest.raises(ProtocolError) as info:
            protocol.parse_request(line)
        assert info.value.code == "malformed"


def test_unknown_type_and_missing_fields():
    with pytest.raises(ProtocolError, match="unknown request type 'dance'"):
        protocol.parse_request('{"type": "dance"}')
    with pytest.raises(ProtocolError, match="missing field 'id'"):
        protocol.parse_request('{"type": "cancel"}')


def test_events_round_trip_and_are_validated():
    ev = protocol.event("progress", id="r1", index=0, step=3, total=20)
    assert protocol.parse_event(protocol.encode(ev)) == ev
    with pytest.raises(ProtocolError, match="unknown field"):
        protocol.parse_event('{"type": "done", "id": "r1", "seconds": 1, "extra": 2}')
    err = protocol.event("error", id=None, code="model_invalid", message="x")
    assert err["id"] is None
