"""FLUX.1 transformers as GGUF, written with the `gguf` package the way city96's ComfyUI-GGUF
(tools/convert.py, then llama-quantize) writes them: they stay quantized in sdtui, the weights
it computes with are gguf.quants.dequantize's bit for bit, and a GGUF of another architecture
is refused in one line, exit 2, before anything is created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdtui.errors import EXIT_BAD_INPUT, BadInput
from sdtui.modelfiles import detect_format
from sdtui.worker.checkpoint import ModelInvalid
from sdtui.worker.flux_files import converter, load_transformer
from tests.helpers_flux_files import (
    WIDTH,
    bfl_flux,
    computed_weights_differ,
    dequantized,
    diffusers_forward,
    gguf,
    inputs,
    reference_forward,
    state_dict,
    write_gguf,
)

REPO = Path(__file__).resolve().parents[1]
Q = gguf().GGMLQuantizationType
# The tensor types behind the file types people download: Q8_0, Q6_K, Q5_K_S (mostly Q5_K),
# Q4_K_S (mostly Q4_K), Q4_0, and the other legacy blocks.
TYPES = [Q.Q8_0, Q.Q6_K, Q.Q5_K, Q.Q4_K, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]
# How far one step's output may move from the unquantized model's, relative to its largest
# value, for what the gguf package can quantize itself (K-quants it can only read).
TOLERANCE = {Q.Q8_0: 0.02, Q.Q5_0: 0.1, Q.Q5_1: 0.1, Q.Q4_0: 0.2, Q.Q4_1: 0.2}


@pytest.fixture(scope="module")
def flux_dev() -> torch.nn.Module:
    return bfl_flux(guidance=True)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
def test_gguf_stays_quantized_and_computes_with_dequantize_bit_for_bit(
        tmp_path: Path, flux_dev: torch.nn.Module, qtype) -> None:
    path = write_gguf(state_dict(flux_dev), tmp_path / f"flux1-dev-{qtype.name}.gguf", qtype)

    transformer = load_transformer(path, torch.float32, "gguf")

    # Kept quantized: the big linears hold raw blocks, dequantized per layer when computing.
    weight = transformer.transformer_blocks[0].ff.net[0].proj.weight
    assert weight.quant_type == qtype and weight.dtype == torch.uint8
    # Every weight it computes with is what the gguf package dequantizes, bit for bit (mapped
    # to diffusers' names by diffusers' converter).
    expected = converter(WIDTH)(dequantized(path))
    assert dict(transformer.named_parameters()).keys() == expected.keys()
    assert computed_weights_differ(transformer, expected) == []
    # And computes what BFL's reference computes with those weights.
    reference = bfl_flux(guidance=True)
    reference.load_state_dict(dequantized(path))
    x = inputs()
    got, same_weights = diffusers_forward(transformer, x), reference_forward(reference, x)
    torch.testing.assert_close(got, same_weights, atol=1e-5 * same_weights.abs().max(), rtol=0)
    if qtype in TOLERANCE:  # within a stated distance of the unquantized model's step
        plain = reference_forward(flux_dev, x)
        assert (got - plain).abs().max() <= TOLERANCE[qtype] * plain.abs().max()


def test_a_language_model_gguf_is_refused_in_one_line(tmp_path: Path,
                                                      flux_dev: torch.nn.Module) -> None:
    g = gguf()
    path = tmp_path / "llama-3.2-1b-Q8_0.gguf"
    writer = g.GGUFWriter(path=None, arch="llama")
    writer.add_context_length(2048)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", g.quants.quantize(
        torch.randn(8, 64).numpy(), Q.Q8_0), raw_dtype=Q.Q8_0)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    with pytest.raises(BadInput) as caught:
        detect_format(path)
    assert "architecture 'llama'" in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(ModelInvalid, match="architecture 'llama'") as refused:
        load_transformer(path, torch.float32, "gguf")
    assert "\n" not in str(refused.value)

    # The command line refuses it before anything is created: no state, no ledger.
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "sdtui", "--no-ui", "--model", str(path), "--prompt", "a cat"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={"SDTUI_STATE_DIR": str(state), "SDTUI_CONFIG_DIR": str(tmp_path / "config"),
             "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "architecture 'llama'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not state.exists() or not any(state.rglob("*.json"))


def test_a_file_named_gguf_that_is_not_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flux1-dev-Q4_K_S.gguf"
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(BadInput, match="not a GGUF model") as caught:
        detect_format(path)
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_a_truncated_gguf_is_refused_in_one_line(tmp_path: Path,
                                                 flux_dev: torch.nn.Module) -> None:
    """A download cut short: the worker names the file, no traceback."""
    path = write_gguf(state_dict(flux_dev), tmp_path / "flux1-dev-Q8_0.gguf", Q.Q8_0)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelInvalid, match="truncated or corrupt") as caught:
        load_transformer(path, torch.float32, "gguf")
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
