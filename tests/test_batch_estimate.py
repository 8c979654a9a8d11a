"""The cost estimate: per-second billing with a 60 s minimum per instance, the slowest shard's
wall time, and measured timings from earlier runs replacing the defaults."""

from __future__ import annotations

import pytest

from sdtui.deploy.batch import estimate
from sdtui.deploy.batch.estimate import Rates

HOURLY = 0.526
RATES = Rates(seconds_per_image=5.0, load_s=45.0, boot_s=300.0, source="default")


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))


def test_more_gpus_finish_sooner_and_cost_more_for_the_boot():
    table = estimate.table([1] * 100, HOURLY, RATES)
    assert [e.shards for e in table] == [1, 2, 4, 8]
    one, two, four, eight = table
    assert one.wall_s == 300 + 45 + 100 * 5
    assert one.cost_usd == pytest.approx(HOURLY * 845 / 3600)
    assert two.wall_s == 300 + 45 + 50 * 5
    assert two.cost_usd == pytest.approx(HOURLY * 2 * 595 / 3600)
    assert eight.wall_s == 300 + 45 + 13 * 5  # 100 = 4 shards of 13 + 4 of 12
    assert eight.cost_usd == pytest.approx(HOURLY * (4 * 410 + 4 * 405) / 3600)
    assert [e.wall_s for e in table] == sorted((e.wall_s for e in table), reverse=True)
    assert all(e.images == 100 for e in table)
    assert four.per_image_usd == pytest.approx(four.cost_usd / 100)


def test_a_short_shard_is_billed_a_full_minute_and_an_empty_one_not_at_all():
    quick = Rates(seconds_per_image=1.0, load_s=2.0, boot_s=3.0, source="default")
    # 3 images over 8 GPUs: 3 shards of 6 s each, billed 60 s; 5 shards never start
    e = estimate.estimate([1, 1, 1, 0, 0, 0, 0, 0], HOURLY, quick)
    assert e.wall_s == 6.0
    assert e.cost_usd == pytest.approx(HOURLY * 3 * 60 / 3600)


def test_defaults_scale_with_steps_and_pixels():
    base = estimate.default_seconds_per_image("g4dn.xlarge", 512, 512, 30)
    assert base == pytest.approx(30 * 0.18 + 1.0)
    assert estimate.default_seconds_per_image("g4dn.xlarge", 1024, 512, 30) == \
        pytest.approx(2 * 30 * 0.18 + 1.0)
    assert estimate.default_seconds_per_image("g4dn.xlarge", 512, 512, 60) == \
        pytest.approx(60 * 0.18 + 1.0)
    assert estimate.default_seconds_per_image("g5.xlarge", 512, 512, 30) < base
    assert estimate.default_load_s(4_300_000_000) == pytest.approx(15 + 43)


def test_measured_timings_replace_the_defaults():
    key = estimate.timing_key("g4dn.xlarge", "sd-v1-4.ckpt", 512, 512, 30)
    before = estimate.rates("g4dn.xlarge", "sd-v1-4.ckpt", 512, 512, 30, 4_300_000_000)
    assert before.source == "default"
    estimate.record_timings(key, [4.0, 6.0], [40.0])
    estimate.record_timings(key, [8.0], [50.0])
    after = estimate.rates("g4dn.xlarge", "sd-v1-4.ckpt", 512, 512, 30, 4_300_000_000)
    assert after.source == "measured"
    assert after.seconds_per_image == pytest.approx(6.0)  # weighted by images seen
    assert after.load_s == pytest.approx(45.0)
    # another size is still the default
    other = estimate.rates("g4dn.xlarge", "sd-v1-4.ckpt", 768, 768, 30, 4_300_000_000)
    assert other.source == "default"


def test_without_a_size_the_estimate_says_what_it_assumed():
    """A run without --width/--height runs at the model's own size, unknown before it loads."""
    rates = estimate.rates("g4dn.xlarge", "sd_xl_base_1.0.safetensors", None, None, 30,
                           6_900_000_000)
    assert rates.seconds_per_image == pytest.approx(
        estimate.default_seconds_per_image("g4dn.xlarge", 512, 512, 30))
    line = estimate.format_table(estimate.table([1] * 10, HOURLY, rates), rates)[-1]
    assert "at 512x512" in line and "--width/--height" in line
    key = estimate.timing_key("g4dn.xlarge", "sd_xl_base_1.0.safetensors", None, None, 30)
    estimate.record_timings(key, [12.0], [60.0])
    measured = estimate.rates("g4dn.xlarge", "sd_xl_base_1.0.safetensors", None, None, 30, 1)
    assert (measured.source, measured.seconds_per_image) == ("measured", 12.0)


def test_the_table_names_its_inputs():
    lines = estimate.format_table(estimate.table([1] * 10, HOURLY, RATES), RATES)
    assert lines[0].split() == ["GPUs", "wall", "time", "total", "per", "image"]
    assert len(lines) == 6
    assert "$0.526/h" in lines[-1] and "60 s minimum" in lines[-1] and "(default)" in lines[-1]


def test_the_attempt_timeout_leaves_room():
    assert estimate.attempt_timeout_s(1, RATES) == 1800
    assert estimate.attempt_timeout_s(1000, RATES) == 3 * (45 + 5000)


def test_a_run_that_names_no_steps_is_estimated_at_the_models_default():
    """No --steps: the model's own, estimated as Stable Diffusion's 30 until a run is measured,
    and measured under its own key."""
    own = estimate.rates("g4dn.xlarge", "sd-v1-4.ckpt", 512, 512, None, 4_300_000_000)
    assert own.seconds_per_image == estimate.rates(
        "g4dn.xlarge", "sd-v1-4.ckpt", 512, 512, 30, 4_300_000_000).seconds_per_image
    key = estimate.timing_key("g4dn.xlarge", "sd-v1-4.ckpt", 512, 512, None)
    assert key != estimate.timing_key("g4dn.xlarge", "sd-v1-4.ckpt", 512, 512, 30)
    estimate.record_timings(key, [2.0], [10.0])
    assert estimate.rates("g4dn.xlarge", "sd-v1-4.ckpt", 512, 512, None,
                          4_300_000_000).source == "measured"
