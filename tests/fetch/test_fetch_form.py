"""The app's deployment form takes the same names as --model: checked for form as typed, then
resolved when the form is submitted (refusals shown as the form's one line), and provisioned
with a `fetch` step before the volume is filled."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdtui.errors import BadInput
from sdtui.fetch.catalogue import CATALOGUE
from sdtui.ui.core import make_deployment
from sdtui.ui.forms import field_errors
from tests.fetch.standin import Hub


@pytest.mark.parametrize(("text", "error"), [
    ("sd15", None),
    ("hf:org/m, ~/GFPGANv1.3.pth", "does not exist"),
    ("hf:org", "no ORG/REPO"),
    ("https://example.com/x.safetensors", "only huggingface.co and civitai.com"),
])
def test_the_model_field_takes_names_to_fetch(text: str, error: str | None) -> None:
    errors = field_errors("local", {"name": "t-form", "models": text, "volume": "v",
                                    "base_image": "b"})
    if error is None:
        assert "models" not in errors
    else:
        assert error in str(errors["models"])


def test_a_submitted_name_is_resolved_and_fetched_first(hub: Hub, tmp_path: Path,
                                                        monkeypatch) -> None:
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SDTUI_CONFIG_DIR", str(tmp_path / "config"))
    entry = CATALOGUE["sdxl"]
    hub.add_repo(entry.source.repo, {entry.source.path: b"x" * 4000})
    values = {"name": "t-form", "models": "sdxl", "volume": "sdtui-test-form",
              "base_image": "b"}
    deployment = make_deployment("local", values)
    steps = [s.name for s in deployment.plan()]
    assert steps.index("fetch") < steps.index("volume") < steps.index("models")
    with pytest.raises(BadInput, match="unknown model name 'sdxx'.*did you mean sdxl"):
        make_deployment("local", {**values, "models": "sdxx"})
    assert not hub.served  # nothing is fetched before provisioning
