"""The cost of reading hostile PNGs, side by side in one run (issue 12's bounds: under a second
and under 100 MB above the process's baseline for any input up to the 32 MiB limit).

  1. `sdtui --no-ui --from-png FILE` for each hostile case of tests/test_metadata_hostile.py
     and for an ordinary sdtui image: wall time and the child's peak RSS, each as a difference
     from the ordinary image (the baseline: same imports, same CLI).
  2. The reader in-process (read_metadata), per case: the parse alone, without start-up.
  3. A1111's settings line: sdtui's linear scanner against A1111's own regex (vendored under
     tests/vendor) on lines of growing length; the ratio shows the regex's quadratic growth.

Usage: python bench/bench_metadata.py [--runs 3] [--cases N] [--lengths 2000 8000 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdtui.errors import BadInput  # noqa: E402
from sdtui.metadata.a1111 import settings_pairs  # noqa: E402
from sdtui.metadata.reader import read_metadata  # noqa: E402
from sdtui.outputs import save_image  # noqa: E402
from tests.test_metadata_hostile import CASES, MEASURE, SDTUI, plain_png  # noqa: E402
from tests.vendor.a1111_infotext import re_param  # noqa: E402

BOUND_S, BOUND_MB = 1.0, 100.0


def cli(path: Path, tmp: Path) -> tuple[float, float]:
    rss = tmp / "rss"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", MEASURE, str(rss), SDTUI, "--no-ui", "--from-png",
                    str(path)], capture_output=True, timeout=300,
                   env={**os.environ, "SDTUI_CONFIG_DIR": str(tmp / "no-config")})
    return time.perf_counter() - start, int(rss.read_text()) / 2**20


def in_process(path: Path) -> float:
    start = time.perf_counter()
    with contextlib.suppress(BadInput):
        read_metadata(path)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", type=int, help="only the first N hostile cases (default all)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[2_000, 8_000, 32_000, 64_000],
                        help="settings-line lengths for the regex comparison")
    args = parser.parse_args()
    runs = args.runs
    tmp = Path(tempfile.mkdtemp(prefix="bench-metadata-"))
    files: dict[str, Path] = {}
    for i, (name, build) in enumerate(list(CASES.items())[:args.cases]):
        content = build()
        if isinstance(content, Path):
            files[name] = tmp / content
        else:
            files[name] = tmp / f"case-{i}.png"
            files[name].write_bytes(content)
    baseline_file = save_image(tmp / "out", plain_png(), {
        "prompt": "a cat", "seed": 1, "steps": 20, "cfg": 7.0, "width": 64, "height": 64,
        "scheduler": "euler_a"})

    base = [cli(baseline_file, tmp) for _ in range(runs)]
    base_s, base_mb = median([b[0] for b in base]), median([b[1] for b in base])
    print(f"baseline (an ordinary sdtui image): {base_s * 1000:.0f} ms, {base_mb:.1f} MiB peak")
    print(f"{'case':42s} {'CLI +ms':>8s} {'+MiB':>7s} {'parse ms':>9s}  within bounds")
    worst_s = worst_mb = 0.0
    for name, path in files.items():
        measured = [cli(path, tmp) for _ in range(runs)]
        extra_s = median([m[0] for m in measured]) - base_s
        extra_mb = median([m[1] for m in measured]) - base_mb
        parse = median([in_process(path) for _ in range(runs)]) if path.is_file() else 0.0
        worst_s, worst_mb = max(worst_s, extra_s, parse), max(worst_mb, extra_mb)
        ok = parse < BOUND_S and extra_s < BOUND_S and extra_mb < BOUND_MB
        print(f"{name:42s} {extra_s * 1000:8.0f} {extra_mb:7.1f} {parse * 1000:9.1f}  "
              f"{'yes' if ok else 'NO'}")
    print(f"worst: +{worst_s * 1000:.0f} ms (bound {BOUND_S * 1000:.0f}), "
          f"+{worst_mb:.1f} MiB (bound {BOUND_MB:.0f})")

    print("\nA1111 settings line: A1111's regex vs sdtui's scanner (same pairs)")
    print(f"{'length':>8s} {'regex ms':>10s} {'scanner ms':>11s} {'ratio':>8s}")
    for size in args.lengths:
        line = "Steps: 20, Sampler: Euler, Seed: 1, " + ("word " * size)[:size]
        start = time.perf_counter()
        expected = re_param.findall(line)
        regex = time.perf_counter() - start
        start = time.perf_counter()
        got = settings_pairs(line)
        scanner = time.perf_counter() - start
        assert got == expected
        print(f"{size:8d} {regex * 1000:10.1f} {scanner * 1000:11.2f} {regex / scanner:7.0f}x")


if __name__ == "__main__":
    main()
