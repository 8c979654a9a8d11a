"""What the worker's `ready` lists beside the model (the API's /sdapi/v1/loras and /upscalers):
the LoRA files a prompt can name, read from their headers alone, and the Real-ESRGAN weights."""

from __future__ import annotations

import json
import struct

from helpers_models import write_fake_safetensors

from sdtui.worker import lora
from sdtui.worker.restorers import listed_upscalers


def test_the_loras_a_prompt_can_name_are_listed_with_their_metadata(tmp_path):
    model = tmp_path / "model.ckpt"
    (tmp_path / "loras" / "people").mkdir(parents=True)
    header = json.dumps({"__metadata__": {"ss_output_name": "Style v2", "ss_network_dim": "8"}})
    write_fake_safetensors(tmp_path / "loras" / "style.safetensors", header.encode())
    write_fake_safetensors(tmp_path / "loras" / "people" / "face.safetensors")
    (tmp_path / "loras" / "broken.safetensors").write_bytes(b"\xff" * 8 + b"not json")
    (tmp_path / "loras" / "notes.txt").write_text("not a LoRA")
    huge = tmp_path / "loras" / "huge.safetensors"  # a header over the cap is not read
    huge.write_bytes(struct.pack("<Q", lora.MAX_LISTED_HEADER + 1) + b"{}")

    listed = lora.listed(str(model))

    assert [(e["name"], e["path"]) for e in listed] == [
        ("broken", str(tmp_path / "loras" / "broken.safetensors")),
        ("huge", str(huge)),
        ("face", str(tmp_path / "loras" / "people" / "face.safetensors")),
        ("style", str(tmp_path / "loras" / "style.safetensors"))]
    assert [e["metadata"] for e in listed] == [
        {}, {}, {}, {"ss_output_name": "Style v2", "ss_network_dim": "8"}]
    assert lora.listed(str(tmp_path / "elsewhere" / "model.ckpt")) == []  # no loras/ folder


def test_the_real_esrgan_weights_beside_the_model_are_listed(tmp_path):
    assert listed_upscalers(tmp_path) == []
    (tmp_path / "RealESRGAN_x4plus.pth").write_bytes(b"weights")
    (tmp_path / "RealESRGAN_x2plus.pth").write_bytes(b"weights")
    assert listed_upscalers(tmp_path) == [
        {"scale": 2, "path": str(tmp_path / "RealESRGAN_x2plus.pth")},
        {"scale": 4, "path": str(tmp_path / "RealESRGAN_x4plus.pth")}]
