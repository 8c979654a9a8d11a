"""`--from-png` on what other tools wrote: real A1111 (of several versions and forks) and dream
(InvokeAI 2.x) files re-run with their values; files from tools sdtui cannot re-run are refused
naming the tool; values sdtui cannot honour are named, never silently replaced."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from sdtui.cli import build_parser
from sdtui.errors import BadInput
from sdtui.headless import generation_requests, png_params
from sdtui.metadata import a1111
from sdtui.metadata.reader import read_metadata, request_from_png
from sdtui.outputs import INPUTS_DIR, read_index, save_image
from sdtui.reporter import Reporter
from tests.vendor.a1111_infotext import re_param

FIXTURES = Path(__file__).parent / "fixtures" / "metadata"


def rerun(path: Path, *flags: str) -> tuple[dict, list[str]]:
    """The checked request `sdtui --no-ui --from-png PATH FLAGS` sends, and its warnings."""
    args = build_parser().parse_args(["--no-ui", "--from-png", str(path), *flags])
    err = io.StringIO()
    base = png_params(args.from_png, args, Reporter(False, err=err))
    (request,) = generation_requests(args, [args.prompt], base)
    return request, [line for line in err.getvalue().splitlines() if line]


def fields(request: dict) -> tuple:
    return (request["seed"], request["steps"], request["cfg"], request["width"],
            request["height"], request["scheduler"], request["schedule"])


@pytest.mark.parametrize(("name", "expected", "negative"), [
    ("sd-webui-cropped.png", (3782896554, 20, 7.0, 1024, 1024, "dpmpp_2m", "karras"),
     "bad quality, worst quality, worst detail, sketch, censor,\n"),
    ("forge-cropped.png", (747066619, 25, 5.0, 1024, 1024, "euler", "karras"),
     "bad quality, worst quality, worst detail, sketch, censor,"),
    ("reforge-cropped.png", (270740395, 20, 6.0, 1024, 1024, "dpmpp_2m", "karras"),
     "bad quality, worst quality, worst detail, sketch, censor,"),
])
def test_real_a1111_files_rerun_with_their_values(name, expected, negative):
    request, warnings = rerun(FIXTURES / name)
    assert fields(request) == expected
    assert request["prompt"].startswith("general, masterpiece") and "テスト" in request["prompt"]
    assert request["negative_prompt"] == negative
    assert request["count"] == 1 and request["init_image"] is None
    assert request["strength"] == 0.75  # the default, not an img2img value
    assert warnings == []  # Version, Model and Model hash only describe the file


def test_a1111_hires_fix_is_named_not_turned_into_img2img():
    request, warnings = rerun(FIXTURES / "sd-webui-hires-cropped.png")
    assert fields(request)[:3] == (3888671826, 20, 5.5)
    assert request["init_image"] is None
    (warning,) = warnings
    assert warning.startswith("warning: sd-webui-hires-cropped.png (A1111): sdtui cannot")
    for value in ("Denoising strength: 0.3", "Hires upscale: 1.5", "Hires steps: 10"):
        assert value in warning


def test_a_real_a1111_unipc_file_reruns_with_unipc():
    request, warnings = rerun(FIXTURES / "automatic1111_cropped.png")
    assert fields(request) == (235284042, 15, 5.0, 512, 400, "unipc", "default")
    assert (request["prompt"], request["negative_prompt"]) == ("photo of a duck", "monochrome")
    assert warnings == []


def test_unknown_sampler_is_bad_input_unless_scheduler_is_given(tmp_path):
    text = "a duck\nSteps: 15, Sampler: DPM++ 2S a, CFG scale: 5, Seed: 3, Size: 64x64"
    path = png_with(tmp_path, parameters=text)
    with pytest.raises(BadInput, match=r"sampler 'DPM\+\+ 2S a'.*--scheduler NAME"):
        rerun(path)
    request, warnings = rerun(path, "--scheduler", "euler")
    assert fields(request) == (3, 15, 5.0, 64, 64, "euler", "default")
    assert warnings == []


@pytest.mark.parametrize("name", ["invokeai_sdmeta1.png", "invokeai_dream1.png"])
def test_real_dream_files_rerun_with_their_values(name):
    request, warnings = rerun(FIXTURES / name)
    assert fields(request) == (2980747362, 50, 5.0, 512, 768, "lms", "default")
    assert request["prompt"].startswith("professional full body photo of young woman")
    assert request["prompt"].endswith("film grain, low contrast")
    assert request["negative_prompt"] == "rendering, glowing eyes, skinny"
    assert (request["upscale"], request["upscale_strength"]) == (4, 0.95)
    assert request["gfpgan"] == 0  # it used CodeFormer, which sdtui does not have...
    (warning,) = warnings  # ...and says so
    assert "codeformer" in warning


DREAM_META = {"image": {"prompt": [{"prompt": "a castle", "weight": 1}], "steps": 20,
                        "cfg_scale": 7.5, "seed": 5, "width": 512, "height": 512,
                        "sampler": "k_lms"}}


def test_dream_hires_fix_only_in_the_command_line_is_named(tmp_path):
    """InvokeAI 2.x wrote --hires_fix into the Dream chunk, not sd-metadata (read first)."""
    path = png_with(tmp_path, sd_metadata=json.dumps(DREAM_META),
                    Dream='"a castle" -s 20 -S 5 -W 512 -H 512 -C 7.5 -A k_lms --hires_fix')
    request, warnings = rerun(path)
    assert fields(request)[:2] == (5, 20)
    (warning,) = warnings
    assert "(InvokeAI 2.x): sdtui cannot reproduce --hires_fix: on" in warning


@pytest.mark.parametrize("texts", [
    {"sd_metadata": json.dumps({"image": {**DREAM_META["image"], "prompt": [
        {"prompt": "a cat.swap(dog) on a mat", "weight": 1}]}})},
    {"Dream": '"a cat.swap(dog) on a mat" -s 20 -S 5 -W 512 -H 512 -C 7.5 -A k_lms'},
], ids=["sd-metadata", "Dream"])
def test_a_dream_swap_prompt_is_named_not_read_silently(tmp_path, texts):
    request, warnings = rerun(png_with(tmp_path, **texts))
    assert request["prompt"] == "a cat.swap(dog) on a mat"  # as written, and said so:
    (warning,) = warnings
    assert "prompt .swap(...) (InvokeAI's prompt-to-prompt edit" in warning


@pytest.mark.parametrize(("name", "tool"), [
    ("comfyui-cropped.png", "ComfyUI"),
    ("img2img_cropped.png", "ComfyUI"),
    ("novelai-full-cropped.png", "NovelAI"),
    ("novelai1_cropped.png", "NovelAI"),
    ("fooocus1_cropped.png", "Fooocus"),
    ("ruined-fooocus-cropped.png", "Fooocus"),
    ("invokeai-cropped.png", "InvokeAI 3 or later"),
    ("invokeai_imeta1.png", "InvokeAI 3 or later"),
    ("automatic1111_cropped.jpg", "a JPEG"),
])
def test_files_sdtui_cannot_rerun_are_refused_naming_the_tool(name, tool):
    with pytest.raises(BadInput) as caught:
        rerun(FIXTURES / name)
    assert tool in str(caught.value) and "\n" not in str(caught.value)


def png_with(tmp_path: Path, **texts: str) -> Path:
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_text(key.replace("_", "-"), value)
    path = tmp_path / "made.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


# Infotexts as A1111 versions wrote them (the settings lines are A1111's own field order).
PRE_1_9 = ("a castle on a hill\nNegative prompt: fog\nSteps: 28, Sampler: DPM++ 2M Karras, "
           "CFG scale: 6.5, Seed: 99, Size: 512x640, Model hash: 6ce0161689, Model: v1-5, "
           "Version: v1.6.0")
VARIATIONS = ("a castle\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, "
              "Model hash: 6ce0161689, Variation seed: 6, Variation seed strength: 0.25")
EXTRAS = ("a castle\nSteps: 20, Sampler: Euler, Schedule type: Exponential, CFG scale: 7, "
          "Seed: 5, Face restoration: GFPGAN, Size: 512x512, Clip skip: 2, ENSD: 31337, "
          "Postprocess upscale by: 2, Postprocess upscaler: R-ESRGAN 2x+")


def test_a1111_combined_sampler_names_and_variations(tmp_path):
    request, warnings = rerun(png_with(tmp_path, parameters=PRE_1_9))
    assert fields(request) == (99, 28, 6.5, 512, 640, "dpmpp_2m", "karras")
    assert request["negative_prompt"] == "fog"
    request, _ = rerun(png_with(tmp_path, parameters=VARIATIONS))
    assert (request["variation_seed"], request["variation_amount"]) == (6, 0.25)


def test_a1111_values_sdtui_cannot_honour_are_named_in_one_line(tmp_path):
    request, warnings = rerun(png_with(tmp_path, parameters=EXTRAS))
    assert (request["scheduler"], request["schedule"]) == ("euler", "exponential")
    assert (request["gfpgan"], request["upscale"], request["upscale_strength"]) == (1.0, 2, 1.0)
    (warning,) = warnings
    assert "Clip skip: 2" in warning and "ENSD: 31337" in warning


def test_an_empty_prompt_keeps_the_settings(tmp_path):
    path = png_with(tmp_path, parameters="Steps: 12, Sampler: Euler a, CFG scale: 4, Seed: 8, "
                                         "Size: 256x256")
    found = read_metadata(path)["params"]
    assert found["prompt"] == "" and (found["steps"], found["seed"]) == (12, 8)
    with pytest.raises(BadInput, match="empty prompt.*--prompt"):
        rerun(path)
    request, _ = rerun(path, "--prompt", "a new prompt")
    assert (request["prompt"], request["steps"], request["seed"], request["cfg"]) == (
        "a new prompt", 12, 8, 4.0)


@pytest.mark.parametrize("text", [
    "just some words",
    "a prompt\nwith lines: but no settings",
    "Steps: 20, Sampler: Euler",  # two pairs: A1111 reads this as a prompt too
])
def test_text_that_is_not_an_infotext_is_refused(tmp_path, text):
    with pytest.raises(BadInput, match="not an A1111 infotext"):
        rerun(png_with(tmp_path, parameters=text))


def test_settings_scanner_finds_exactly_what_a1111s_regex_finds():
    rng = random.Random(12)
    pieces = ["Steps", ": ", ":", ",", ", ", " ", '"', '\\"', "\\", "\\\\", "a", "Key-x/y",
              "1.5", "x", "\t", "é", "(", "Size: 512x512", '"q, r"', "\u3000"]
    for _ in range(3000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 24)))
        assert a1111.settings_pairs(line) == re_param.findall(line), line


def test_a_quoted_value_with_a_bad_json_escape_is_kept_as_a1111_keeps_it(tmp_path):
    text = 'x\nSteps: 20, Sampler: Euler, Seed: 3, Lora hashes: "a: \\q", CFG scale: 7'
    found = read_metadata(png_with(tmp_path, parameters=text))
    assert (found["params"]["steps"], found["params"]["cfg"]) == (20, 7.0)


# --- init images stored once ------------------------------------------------------------------

def init_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (9, 99, 199)).save(buffer, "PNG")
    return buffer.getvalue()


def img2img_batch(out: Path, count: int = 4) -> list[Path]:
    init = base64.b64encode(init_png()).decode()
    paths = []
    for index in range(count):
        params = {"prompt": "a red barn", "seed": 10 + index, "steps": 5, "cfg": 7.0,
                  "width": 64, "height": 64, "scheduler": "euler_a", "init_image": init,
                  "strength": 0.5, "index": index}
        paths.append(save_image(out, init_png(), params))
    return paths


def test_an_img2img_batch_of_four_stores_its_init_image_once(tmp_path):
    paths = img2img_batch(tmp_path)
    stored = list((tmp_path / INPUTS_DIR).iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == init_png()
    encoded = base64.b64encode(init_png()).decode()
    for path in paths:
        assert encoded[:40].encode() not in path.read_bytes()
        assert len(path.read_bytes()) < 4 * 1024
    index_text = (tmp_path / "index.jsonl").read_text()
    assert encoded[:40] not in index_text
    assert read_index(tmp_path)[0]["params"]["init_image"]["path"] == (
        f"{INPUTS_DIR}/{stored[0].name}")


def test_from_png_rebuilds_the_init_image_from_the_stored_copy(tmp_path):
    path = img2img_batch(tmp_path, 1)[0]
    request, _ = rerun(path)
    assert base64.b64decode(request["init_image"]) == init_png()
    assert (request["strength"], request["seed"]) == (0.5, 10)


def test_a_missing_or_changed_stored_copy_is_named(tmp_path):
    path = img2img_batch(tmp_path, 1)[0]
    (stored,) = (tmp_path / INPUTS_DIR).iterdir()
    stored.write_bytes(init_png() + b"x")
    with pytest.raises(BadInput, match="has changed"):
        rerun(path)
    stored.unlink()
    with pytest.raises(BadInput) as caught:
        rerun(path)
    message = str(caught.value)
    assert str(stored) in message and "missing" in message and "--init-image" in message
    request, _ = rerun(path, "--init-image", str(path))  # a replacement makes it run
    assert request["init_image"]


@pytest.mark.parametrize("recorded", ["/etc/passwd", "../../secret.png", "inputs/../../x.png"])
def test_a_recorded_input_path_outside_the_folder_is_refused(tmp_path, recorded):
    path = img2img_batch(tmp_path, 1)[0]
    meta = json.loads(Image.open(path).text["sd-metadata"])
    meta["sdtui"]["params"]["init_image"]["path"] = recorded
    from sdtui.metadata.png_chunks import embed_text

    path.write_bytes(embed_text(path.read_bytes(), {"sd-metadata": json.dumps(meta)}))
    with pytest.raises(BadInput, match="not inside the image's folder"):
        request_from_png(path, set())


class Spans:
    """A compiled pattern that records the span each match call scanned."""

    def __init__(self, pattern) -> None:
        self.pattern, self.spans = pattern, []

    def match(self, line, pos):
        found = self.pattern.match(line, pos)
        self.spans.append((pos, found.end()))
        return found


@pytest.mark.parametrize("line", [
    "Steps: 20, Sampler: Euler, Seed: 1, " + "word " * 40_000,  # A1111's regex: quadratic
    "Steps: 20, " + "a-b/c d" * 20_000 + ": 1",
    "Steps: 20, " + "k: v, " * 20_000,
], ids=["200 KB of words", "one long key run", "many pairs"])
def test_the_settings_scanner_reads_each_character_of_a_key_once(monkeypatch, line):
    """The time bound, structurally: key runs are scanned once each (A1111's regex rescans a
    run from every position in it), and values are found with one pass (see _free_quotes)."""
    spans = Spans(a1111._KEY_CHARS)
    monkeypatch.setattr(a1111, "_KEY_CHARS", spans)
    a1111.settings_pairs(line)
    assert sum(end - start for start, end in spans.spans) <= len(line)
    assert all(a[1] <= b[0] for a, b in zip(spans.spans, spans.spans[1:], strict=False))


def test_a_mask_is_recorded_and_read_like_the_init_image():
    """Inpainting's mask is another stored input image: the dream layout's -M / init_mask."""
    from sdtui.metadata import dream

    params = {"prompt": "a cat", "steps": 20, "seed": 1, "width": 64, "height": 64, "cfg": 7.0,
              "scheduler": "euler", "strength": 0.7,
              "init_image": {"sha256": "ab" * 32, "path": f"inputs/{'ab' * 32}.png"},
              "mask": {"sha256": "cd" * 32, "path": f"inputs/{'cd' * 32}.png"}}
    command = dream.dream_command(params)
    assert f"-I inputs/{'ab' * 32}.png" in command and f"-M inputs/{'cd' * 32}.png" in command
    assert dream.read_command(command).params["mask"] == {"path": params["mask"]["path"]}
    image = dream.sd_metadata(params)["image"]
    assert image["init_mask"] == params["mask"]["path"]
    assert dream.read_sd_metadata({"image": image}).params["mask"]["path"] == image["init_mask"]


def test_an_image_from_before_inputs_were_stored_still_reruns(tmp_path):
    """sdtui's first files carried the init image inline, base64, in their recorded request."""
    inline = base64.b64encode(init_png()).decode()
    meta = {"sdtui": {"version": 1, "params": {
        "prompt": "a red barn", "seed": 4, "steps": 5, "cfg": 7.0, "width": 64, "height": 64,
        "scheduler": "euler_a", "init_image": inline, "strength": 0.4}}}
    request, warnings = rerun(png_with(tmp_path, sd_metadata=json.dumps(meta)))
    assert (request["init_image"], request["strength"], request["seed"]) == (inline, 0.4, 4)
    assert warnings == []


@pytest.mark.parametrize(("settings", "schedule"), [
    ("Sampler: DPM++ 2M, Schedule type: Automatic", "karras"),
    ("Sampler: DPM++ 2M, Version: v1.10.1", "karras"),  # 1.9+: automatic
    ("Sampler: DPM++ 2M SDE, Schedule type: Automatic", "exponential"),
    ("Sampler: DPM++ 2M, Version: v1.6.0", "default"),  # before 1.9: uniform
    ("Sampler: DPM++ 2M Karras, Version: v1.10.1", "karras"),
    ("Sampler: DDIM, Schedule type: Automatic", "default"),  # DDIM has one schedule
])
def test_a1111s_automatic_schedule_is_the_one_a1111_picks_never_silently_uniform(
        tmp_path, settings, schedule):
    text = f"a cat\nSteps: 20, {settings}, CFG scale: 7, Seed: 1, Size: 64x64"
    request, warnings = rerun(png_with(tmp_path, parameters=text))
    assert request["schedule"] == schedule
    assert warnings == []


def test_sdtuis_own_png_over_32_mib_reruns_from_the_chunks_before_its_pixels(tmp_path):
    """An 8192² upscale is far over 32 MiB; its metadata sits before IDAT, and only the chunks
    up to there are read."""
    side = 3400  # noise does not compress: a PNG of about 35 MB
    noise = Image.frombytes("RGB", (side, side), random.Random(1).randbytes(side * side * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=0)
    assert buffer.tell() > 32 * 2**20
    params = {"prompt": "a lighthouse", "seed": 7, "steps": 12, "cfg": 6.0, "width": 64,
              "height": 64, "scheduler": "ddim", "upscale": 4}
    path = save_image(tmp_path / "out", buffer.getvalue(), params)
    request, warnings = rerun(path)
    assert (request["prompt"], request["seed"], request["steps"], request["scheduler"],
            request["upscale"]) == ("a lighthouse", 7, 12, "ddim", 4)
    assert warnings == []
