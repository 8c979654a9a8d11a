"""bench/bench_gpu.py measures on a CUDA machine only; what it runs there is checked here on the
CPU with the tiny models: both paths make an image, and a worker that fails is never timed as
one. (No timings are asserted: the bench prints them.)"""

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
    assert set(result) == {"bare", "worker", "load"}


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
