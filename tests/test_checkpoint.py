"""Reading single-file checkpoints: pickled code refused by name, harmless training leftovers
let through, legacy files recognised, and the memory a read takes."""

from __future__ import annotations

import builtins
import os
import pickle
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sdtui.worker.checkpoint import Checkpoint, ModelInvalid, read_safetensors
from sdtui.worker.models import load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tiny_models) -> dict[str, torch.Tensor]:
    return torch.load(tiny_models["ckpt"], weights_only=True)["state_dict"]


def checkpoint_beside(tiny_models, folder: Path, name: str, payload: dict, **save) -> Path:
    """A copy of the tiny SD 1.x checkpoint with `payload` pickled beside its state dict."""
    path = folder / f"{name}.ckpt"
    state = torch.load(tiny_models["ckpt"], weights_only=True)["state_dict"]
    torch.save({"state_dict": state, **payload}, path, **save)
    shutil.copytree(tiny_models["ckpt"].with_name("tiny.config"), folder / f"{name}.config")
    return path


class Payload:
    """Pickles as a call of `function(*args)` — what a hostile checkpoint carries."""

    def __init__(self, function, *args) -> None:
        self.call = (function, args)

    def __reduce__(self):
        return self.call


@pytest.mark.parametrize(("function", "named"), [
    (builtins.exec, "builtins.exec"),
    (subprocess.call, "subprocess.call"),
    (os.system, f"{os.system.__module__}.system"),  # posix.system on Linux
])
def test_pickled_code_is_refused_naming_the_object_and_never_run(tiny_models, tmp_path,
                                                                function, named):
    marker = tmp_path / "ran"
    args = {builtins.exec: (f"open({str(marker)!r}, 'w')",),
            subprocess.call: (["touch", str(marker)],),
            os.system: (f"touch {marker}",)}[function]
    path = checkpoint_beside(tiny_models, tmp_path, "hostile",
                             {"callbacks": Payload(function, *args)})
    with pytest.raises(ModelInvalid, match=f"{path} holds pickled code, not just weights: "
                                           f"{named};") as info:
        load_model(str(path))
    assert "refuses to load it" in str(info.value)
    assert not marker.exists()


def with_decoy(path: Path) -> Path:
    """The checkpoint rewritten with a harmless `data.pkl` listed before the one torch reads."""
    decoy = path.with_name(f"decoy-{path.name}")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(decoy, "w") as out:
        prefix = src.namelist()[0].split("/")[0]
        out.writestr(f"{prefix}/aaa/data.pkl", pickle.dumps({"nothing": 1}, protocol=2))
        for name in src.namelist():
            out.writestr(name, src.read(name))
    shutil.copytree(path.with_suffix(".config"), decoy.with_suffix(".config"))
    return decoy


def test_a_decoy_pickle_beside_the_real_one_hides_nothing(tiny_models, tmp_path):
    marker = tmp_path / "ran"
    path = with_decoy(checkpoint_beside(tiny_models, tmp_path, "hostile", {
        "callbacks": Payload(builtins.exec, f"open({str(marker)!r}, 'w')")}))
    with pytest.raises(ModelInvalid) as info:
        load_model(str(path))
    message = str(info.value)
    assert f"{path} holds pickled code, not just weights: builtins.exec;" in message
    assert "\n" not in message and "\x1b" not in message and "two options" not in message
    assert not marker.exists()


def test_code_in_a_legacy_files_magic_number_is_refused_as_hostile(tiny_models, tmp_path):
    """A pre-1.6 file is four pickles; the first (the magic number) can carry code too."""
    marker = tmp_path / "ran"
    legacy = checkpoint_beside(tiny_models, tmp_path, "legacy", {},
                               _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    magic_end = data.index(pickle.STOP) + 1
    hostile = tmp_path / "old-magic.ckpt"
    hostile.write_bytes(pickle.dumps(Payload(os.system, f"touch {marker}"), protocol=2)
                        + data[magic_end:])
    shutil.copytree(legacy.with_suffix(".config"), hostile.with_suffix(".config"))
    with pytest.raises(ModelInvalid) as info:
        load_model(str(hostile))
    assert f"{hostile} holds pickled code, not just weights: {os.system.__module__}.system" in \
        str(info.value)
    assert "re-save" not in str(info.value) and not marker.exists()


@pytest.fixture
def lightning_module(monkeypatch):
    """A stand-in for pytorch_lightning's ModelCheckpoint, importable under its real name
    while the test pickles it (sdtui itself never imports it)."""
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self) -> None:
            self.best_model_score = np.float64(0.25)
            self.dirpath = "logs/checkpoints"

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return ModelCheckpoint


def test_harmless_training_leftovers_load_as_placeholders(tiny_models, tmp_path,
                                                          lightning_module):
    """Like sd-v1-4.ckpt: a Lightning callback, numpy scalars, dtypes and arrays beside the
    weights (torch's weights-only load alone refuses them)."""
    path = checkpoint_beside(tiny_models, tmp_path, "trained", {
        "global_step": np.int64(470000),
        "callbacks": {"ModelCheckpoint": lightning_module()},
        "loops": {"dtype": np.dtype("float32"), "history": np.zeros(3)},
    })
    with pytest.raises(Exception, match="weights_only"):
        torch.load(path, weights_only=True)
    model = load_model(str(path))
    assert model.format == "ckpt" and model.warnings == []


def test_a_legacy_ckpt_loads_and_a_broken_one_says_what_it_is(tiny_models, tmp_path):
    """The pre-1.6 torch.save format (not a zip): read, leftovers included."""
    legacy = checkpoint_beside(tiny_models, tmp_path, "legacy",
                               {"global_step": np.int64(1)},
                               _use_new_zipfile_serialization=False)
    assert not legacy.read_bytes().startswith(b"PK")
    assert load_model(str(legacy)).format == "ckpt"
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(legacy.read_bytes()[: legacy.stat().st_size // 2])
    with pytest.raises(ModelInvalid, match="broken.ckpt is a legacy PyTorch checkpoint "
                                           r"\(the pre-1.6 non-zip torch.save format\)"):
        load_model(str(broken))
    hostile = checkpoint_beside(tiny_models, tmp_path, "old-hostile",
                                {"x": Payload(os.system, "true")},
                                _use_new_zipfile_serialization=False)
    with pytest.raises(ModelInvalid, match="holds pickled code, not just weights: .*system"):
        load_model(str(hostile))


# --- .safetensors reading -----------------------------------------------------------------


def test_the_sequential_reader_gives_safetensors_own_tensors(tiny_models):
    path = tiny_models["safetensors"]
    ours = read_safetensors(path, lambda key: True, torch.float32)
    theirs = load_file(path)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype
               for k in theirs)
    halves = read_safetensors(path, lambda key: key.startswith("first_stage"), torch.float16)
    assert {t.dtype for t in halves.values()} == {torch.float16}
    assert len(halves) == sum(k.startswith("first_stage") for k in theirs)


def test_a_truncated_safetensors_is_refused_before_anything_loads(tiny_models, tmp_path):
    data = tiny_models["safetensors"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 4096])
    with pytest.raises(ModelInvalid, match="cut.safetensors is truncated or corrupt"):
        Checkpoint(cut, "safetensors").read(lambda key: True, torch.float32)


# Peak memory of one read in a fresh process, from a high-water mark reset after the imports.
_MEASURE = """
import sys, torch
from pathlib import Path
from sdtui.worker.checkpoint import Checkpoint
def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
path, fmt, dtype = Path(sys.argv[1]), sys.argv[2], getattr(torch, sys.argv[3])
open("/proc/self/clear_refs", "w").write("5")
before = kib("VmRSS:")
state = Checkpoint(path, fmt).read(lambda key: True, dtype)
print(kib("VmHWM:") - before, sum(t.numel() * t.element_size() for t in state.values()) // 1024)
"""


def peak_kib(path: Path, fmt: str, dtype: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), fmt, dtype], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.fixture(scope="module")
def big_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """160 MiB of float32 in 40 tensors, like a checkpoint's many layers."""
    folder = tmp_path_factory.mktemp("big")
    generator = torch.Generator().manual_seed(0)
    state = {f"model.diffusion_model.layer{i}.weight": torch.randn(1024, 1024,
                                                                   generator=generator)
             for i in range(40)}
    save_file(state, folder / "big.safetensors")
    torch.save({"state_dict": state}, folder / "big.ckpt")
    return {"safetensors": folder / "big.safetensors", "ckpt": folder / "big.ckpt"}


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
def test_reading_a_checkpoint_peaks_at_its_size_not_twice(big_checkpoints, fmt):
    size_kib = big_checkpoints[fmt].stat().st_size // 1024
    peak, kept = peak_kib(big_checkpoints[fmt], fmt, "float32")
    assert kept >= 0.99 * size_kib
    assert peak <= 1.2 * size_kib, f"{fmt}: peak {peak} KiB for a {size_kib} KiB file"


def test_a_float16_read_of_a_float32_file_never_holds_the_float32_copy(big_checkpoints):
    """On a GPU the model runs in float16: each tensor is cast as it is read."""
    size_kib = big_checkpoints["safetensors"].stat().st_size // 1024
    peak, kept = peak_kib(big_checkpoints["safetensors"], "safetensors", "float16")
    assert kept <= 0.51 * size_kib
    # The float16 tensors and one float32 tensor at a time; a float32 copy of the model
    # would be another 1.0x.
    assert peak <= 0.6 * size_kib, f"peak {peak} KiB for a {size_kib} KiB float32 file"
