"""The app's words (issue 21): fix lines name form fields and keys, not flags and variables;
the caption under an image says what shaped it, readably."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdtui.catalog import CatalogImage
from sdtui.deploy.base import DeploymentStatus, Resource
from sdtui.ui.fixes import in_app
from sdtui.ui.screens.teardown import describe as describe_teardown
from sdtui.ui.widgets.gallery import describe

# --- 8: fix lines name form fields and keys, not flags and variables ----------------------------


@pytest.mark.parametrize(("fix", "said"), [
    ("start Docker Desktop or dockerd, or set DOCKER_HOST",
     "start Docker Desktop or dockerd, or enter it in “Docker host/context”"),
    ("pull it (docker pull IMAGE) or pass --base-image with an image this engine has",
     "pull it (docker pull IMAGE) or enter “Base image” with an image this engine has"),
    ("run sdtui again to recreate it", "ctrl+b, then Resume (ctrl+r) to recreate it"),
    ("pass --region (e.g. us-east-1) or set AWS_REGION", "enter “Region” (e.g. us-east-1)"),
])
def test_fix_lines_in_the_app_name_fields_and_keys(fix: str, said: str) -> None:
    assert in_app(fix) == said


def test_the_teardown_dialog_names_its_checkbox_not_the_flag() -> None:
    status = DeploymentStatus("local", "local", "ready", [
        Resource("volume", "sdtui-models", "present", kept_on_teardown=True,
                 note="the model files; --purge-volume deletes it")])
    text = describe_teardown(status, Path("/outputs"), purge=False).plain
    assert "--purge" not in text
    assert "tick “Also delete the model volume” (teardown dialog) to delete it" in text


# --- 12: the caption shows the parameters that apply, readably ---------------------------------


def test_the_caption_shows_what_applies_readably() -> None:
    params = {"prompt": "a lighthouse", "negative_prompt": "", "seed": 42, "width": 512,
              "height": 512, "steps": 30, "cfg": 7.5, "scheduler": "dpmpp_2m",
              "schedule": "karras", "strength": 0.75, "fit": "resize",
              "upscale_strength": 0.75, "gfpgan": 0.0, "grid": False, "index": 0,
              "variation_amount": 0.0, "count": 1}
    caption = describe(CatalogImage(Path("/out/a.png"), params, ""))
    assert caption == ("saved /out/a.png\na lighthouse\n"
                       "512×512 · 30 steps · cfg 7.5 · DPM++ 2M, Karras · seed 42")
