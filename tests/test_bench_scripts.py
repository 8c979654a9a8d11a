"""Every script under bench/ runs to the end at its smallest size, so that none rots unnoticed
(bench_container.py once waited for an event name the runner no longer sent, and always ended
"sdtui failed"). Nothing is timed here: the benches print their figures, the tests only check
that they get as far as printing them. bench_gpu.py measures only on CUDA; here it must say so
and exit 0 (tests/test_bench_gpu.py checks its paths on the CPU)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
BASE = os.environ.get("SDTUI_TEST_BASE_IMAGE", "sdtui-base:offline")
HANG_GUARD_S = 900  # a guard against a hang, not a time bound

# script: (its smallest run, a line it prints only once it has measured everything)
SMALLEST = {
    "bench_container.py": (["--base-image", BASE, "--runs", "1", "--steps", "2", "--size", "64"],
                           "64x64: in-process"),
    "bench_features.py": (["--size", "64", "--steps", "2", "--runs", "1", "--scale", "2"],
                          "untiled"),
    "bench_gpu.py": ([], "no CUDA device"),
    "bench_load.py": (["--tiny", "--formats", "safetensors"], "weights bit-identical: yes"),
    "bench_serve.py": (["--base-image", BASE, "--runs", "1", "--steps", "2", "--size", "64",
                        "--polls", "3"], "p95"),
    "bench_metadata.py": (["--runs", "1", "--cases", "2", "--lengths", "2000"], "2000"),
    "bench_tui.py": (["--presses", "3"], "p95"),
    "bench_upload.py": (["--size-mib", "1", "--runs", "1"], "ratio sdtui/boto3"),
    "bench_worker.py": (["--runs", "1", "--steps", "2", "--size", "64"], "sdtui --help"),
}
NEEDS_DOCKER = {"bench_container.py", "bench_serve.py"}


def is_script(path: Path) -> bool:
    """A file with `if __name__ == "__main__":` (bench/scratch.py is a helper the others use)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
               for node in tree.body)


def test_every_bench_script_is_run_here() -> None:
    scripts = {path.name for path in BENCH.glob("*.py") if is_script(path)}
    assert scripts == set(SMALLEST)


@pytest.mark.slow
@pytest.mark.parametrize("script", [
    pytest.param(name, marks=pytest.mark.docker) if name in NEEDS_DOCKER else name
    for name in SMALLEST])
def test_the_bench_runs_to_the_end_at_its_smallest_size(script: str, tmp_path: Path) -> None:
    argv, last = SMALLEST[script]
    env = {**os.environ, "SDTUI_STATE_DIR": str(tmp_path / "state"),
           "SDTUI_CONFIG_DIR": str(tmp_path / "config"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(BENCH / script), *argv], capture_output=True,
                          text=True, timeout=HANG_GUARD_S, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert last in proc.stdout, proc.stdout[-2000:]
