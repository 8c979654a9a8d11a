"""bench/bench_gpu.py measures on a CUDA machine only; what it runs there is checked here on the
CPU with the tiny models: both paths make an image, every row (FLUX.1 [schnell] Q8_0 and [dev]
Q4_K_S GGUF sets, SD 3.5 Medium's single file, a FLUX.2 Klein folder) writes its files with the
same code as at full size and runs to its printed figures, and a worker that fails is never
timed as one. (No timings are asserted: the bench prints them.)"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench_gpu():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.slow
def test_the_benchmarked_paths_make_an_image(bench_gpu, family_models):
    """SDXL's: its VAE changes dtype between the two paths."""
    result = bench_gpu.bench_model(family_models["sdxl"]["safetensors"], 64, 2, 1,
                                   device="cpu", dtype=torch.float32)
    assert set(result) == {"bare", "worker", "load", "peak_vram", "peak_rss"}


NEW_ROWS = ("flux1-schnell", "flux1-dev", "sd35-medium", "klein-4b")


@pytest.mark.slow
def test_the_new_families_rows_run_on_the_cpu_at_the_smallest_size(bench_gpu, tmp_path):
    """The rows' own writers, loader, sampler names and guidance, test-sized (bench_gpu.py
    --tiny): each prints its figures, and the worker made every image it timed."""
    for family in NEW_ROWS:
        line = bench_gpu.run_row(family, tmp_path, runs=1, tiny=True)
        assert line.startswith(f"{family} 64x64 2 steps"), line
        assert "peak host RSS" in line and "peak host RSS 0.00" not in line, line


def test_a_failing_worker_is_not_timed(bench_gpu, family_models, monkeypatch):
    from sdtui.worker.sampling import Sampler

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(Sampler, "run", broken)
    with pytest.raises(SystemExit, match="the worker did not make the image.*out of memory"):
        bench_gpu.bench_model(family_models["sd1"]["safetensors"], 64, 2, 1, device="cpu",
                              dtype=torch.float32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the bench runs")
def test_without_cuda_it_says_so_in_one_line():
    result = subprocess.run([sys.executable, str(BENCH / "bench_gpu.py")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert result.stdout.startswith("bench_gpu: SKIPPED: no CUDA device")
    assert len(result.stdout.strip().splitlines()) == 1
