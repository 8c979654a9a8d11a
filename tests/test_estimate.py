"""The Option A form's cost and time line: the built-in price table and the README's cold-start
table, which this test keeps equal to the code's."""

from __future__ import annotations

import re
from pathlib import Path

from sdtui.deploy.aws.estimate import COLD_START, cold_start_s, cold_start_text, launch_line
from sdtui.deploy.aws.pricing import FALLBACK_HOURLY, Price

README = Path(__file__).resolve().parents[1] / "README.md"


def _seconds(text: str) -> tuple[int, int]:
    text = text.split("(")[0]  # the reason after a time names things ("s3fs")
    if text.strip().startswith("skipped"):
        return 0, 0
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)]
    scale = 60 if "min" in text else 1
    low, high = (numbers[0], numbers[-1])
    return round(low * scale), round(high * scale)


def test_the_cold_start_estimate_is_the_readmes_table() -> None:
    table = README.read_text().split("### Cold start", 1)[1].split("\n\n", 3)[2]
    rows = [line.split("|")[1:6] for line in table.splitlines()[2:]]
    assert [(*_seconds(first), *_seconds(relaunch), *_seconds(restart))
            for _, first, relaunch, restart, _how in rows] == [row[1:] for row in COLD_START]
    assert {how.strip() for *_, how in rows} <= {"estimated", "measured"}
    assert cold_start_s() == (315, 530)
    assert cold_start_s("relaunch") == (145, 250) and cold_start_s("restart") == (75, 120)


def test_the_readme_says_the_forms_cold_start_figure() -> None:
    """One figure, from one table: the sentence under the table is the form's."""
    text = " ".join(README.read_text().split())
    assert f"A first launch takes ≈ {cold_start_text()}," in text
    assert f"a relaunch ≈ {cold_start_text('relaunch')}" in text
    assert f"a restart ≈ {cold_start_text('restart')}" in text


def test_the_line_says_price_cold_start_and_idle_stop() -> None:
    line = launch_line("g4dn.xlarge", "us-east-1", spot=False, idle_minutes=30)
    assert line == ("g4dn.xlarge on-demand $0.526/h · cold start ≈ 5.2–8.8 min (a relaunch "
                    "2.4–4.2 min, a restart 1.2–2 min) · idle auto-stop after 30 min "
                    "(≤ $0.26 idle)")
    assert f"${FALLBACK_HOURLY['g5.xlarge']:.3f}/h" in launch_line(
        "g5.xlarge", None, spot=False, idle_minutes=10)


def test_spot_is_an_upper_bound_until_aws_answers() -> None:
    assert "spot ≤ $0.526/h (on-demand price)" in launch_line(
        "g4dn.xlarge", None, spot=True, idle_minutes=30)
    asked = launch_line("g4dn.xlarge", None, spot=True, idle_minutes=60,
                        price=Price(0.2104, "spot-price"))
    assert "spot $0.210/h" in asked and "(≤ $0.21 idle)" in asked
