"""Every script under bench/ runs to the end at its smallest size, so that none rots unnoticed
(bench_container.py once waited for an event name the runner no longer sent, and always ended
"sdtui failed"). Nothing is timed here: the benches print their figures, the tests only check
that they get as far as printing them. bench_gpu.py measures only on CUDA; here it must say so
and exit 0 (tests/test_bench_gpu.py checks its paths on the CPU).

To keep CI short, the scripts that take a model get the session's tiny model (written once for
every test) instead of writing their own, and repeat what they time once."""

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

# script: (its smallest run, a line it prints only once it has measured everything). {ckpt}
# and {diffusers}: the session's tiny model in that format.
SMALLEST = {
    "bench_contention.py": (["--runs", "1", "--steps", "2", "--size", "64", "--model",
                             "{diffusers}"], "passive/default"),
    "bench_container.py": (["--base-image", BASE, "--runs", "1", "--steps", "2", "--size", "64",
                            "--model", "{ckpt}"], "64x64: in-process"),
    "bench_features.py": (["--size", "64", "--steps", "2", "--runs", "1", "--scale", "2",
                           "--model", "{diffusers}"], "untiled"),
    "bench_gpu.py": ([], "no CUDA device"),
    # Every row, test-sized, both loaders in one process (one import of torch and diffusers).
    "bench_load.py": (["--tiny"], "bit-identical"),
    "bench_serve.py": (["--base-image", BASE, "--runs", "1", "--steps", "2", "--size", "64",
                        "--polls", "3", "--model", "{ckpt}"], "p95"),
    "bench_metadata.py": (["--runs", "1", "--cases", "2", "--lengths", "2000"], "2000"),
    "bench_tui.py": (["--presses", "3", "--frames", "1", "--model", "{diffusers}"], "p95"),
    "bench_upload.py": (["--size-mib", "1", "--runs", "1"], "ratio sdtui/boto3"),
    "bench_worker.py": (["--runs", "1", "--steps", "2", "--size", "64", "--model",
                         "{diffusers}"], "sdtui --help"),
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
def test_the_bench_runs_to_the_end_at_its_smallest_size(script: str, tmp_path: Path,
                                                        tiny_models: dict[str, Path]) -> None:
    argv, last = SMALLEST[script]
    argv = [arg.format(**{fmt: str(path) for fmt, path in tiny_models.items()})
            for arg in argv]
    env = {**os.environ, "SDTUI_STATE_DIR": str(tmp_path / "state"),
           "SDTUI_CONFIG_DIR": str(tmp_path / "config"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(BENCH / script), *argv], capture_output=True,
                          text=True, timeout=HANG_GUARD_S, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert last in proc.stdout, proc.stdout[-2000:]
    if script == "bench_load.py":  # each row's two loaders hold the same weights
        rows = [line for line in proc.stdout.splitlines() if "bit-identical" in line]
        assert len(rows) == 7 and all(line.endswith("bit-identical: yes") for line in rows), (
            proc.stdout)
