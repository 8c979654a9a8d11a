"""`--model KEY` for a FLUX.1, SD 3.5 or FLUX.2 Klein split set already in the bucket (uploaded by
Option A's own upload into moto S3 over HTTP): the scale-out's plan copies every part, resolved
from the files' headers alone (ranged GETs), and refuses a set with a part missing before
anything is created, in modelsets' words."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdtui.deploy.aws import upload
from sdtui.deploy.batch import bucket_sets
from sdtui.deploy.batch.models import plan
from sdtui.errors import BadInput

from .test_bad_input import refused

BUCKET = "sdtui-batch-bucket-sets"
OPTION_A = {"TagSet": [{"Key": "sdtui:deployment", "Value": "aws"}]}


@pytest.fixture(scope="module")
def sets(tmp_path_factory, tiny_sd3, tiny_klein) -> dict[str, Path]:
    """Each family's transformer file (the set's folder is its parent); SD 3.5's T5 a GGUF."""
    from tests.helpers_sd3_files import family_sets

    return family_sets(tmp_path_factory.mktemp("bucket-sets"), tiny_sd3, tiny_klein, "gguf")


def option_a_bucket(aws, models: list[Path]) -> dict[Path, list[str]]:
    """An Option A bucket holding `models` (each uploaded by Option A's own upload), a checkpoint
    and a run of someone else's; the keys each model's upload wrote."""
    s3 = aws["s3"]
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging=OPTION_A)
    s3.put_object(Bucket=BUCKET, Key="sd-v1-4.ckpt", Body=b"\x80\x02 not copied")
    s3.put_object(Bucket=BUCKET, Key="runs/20250601-120000-abcd/prompts.jsonl", Body=b"{}\n")
    return {model: upload.upload_models(s3, BUCKET, [model]).uploaded for model in models}


def test_a_set_in_the_bucket_is_copied_whole(aws, sets):
    """Each family's set by its folder's key; FLUX.1's (a GGUF) and Klein's by their transformer
    file's key at the root, where their parts lie side by side (SD 3.5's clip_l would collide
    with FLUX.1's there: its transformer is named inside its folder)."""
    folders = [transformer.parent for transformer in sets.values()]
    at_root = [sets["flux1"], sets["flux2-klein"]]
    uploaded = option_a_bucket(aws, folders + at_root)
    escape = Path(f"/tmp/{BUCKET}-escaped")  # a key naming a path outside the stubs' folder
    aws["s3"].put_object(Bucket=BUCKET, Key=f"klein/flux-2-klein-4b.config/{'../' * 16}{escape}",
                         Body=b"x")
    cases = {model.name: uploaded[model] for model in folders + at_root}
    sd3 = sets["sd3"]
    cases[f"{sd3.parent.name}/{sd3.name}"] = uploaded[sd3.parent]
    gets = []
    aws["s3"].meta.events.register("provide-client-params.s3.GetObject",
                                   lambda params, **_: gets.append(dict(params)))
    for key, expected in cases.items():
        gets.clear()

        files = plan(aws["s3"], BUCKET, True, [key])

        assert files.primary == key
        assert sorted(files.keys) == sorted(expected), key  # every part and sidecar, no more
        assert files.total_bytes == sum(
            aws["s3"].head_object(Bucket=BUCKET, Key=k)["ContentLength"] for k in expected)
        # headers only: every GET ranged, at most two for each model file beside the key
        assert gets and [get["Key"] for get in gets if "Range" not in get] == [], key
        assert len(gets) <= 2 * len({get["Key"] for get in gets}), key
    assert not escape.exists()


def test_a_set_with_a_part_missing_is_refused_before_anything(capsys, aws, tmp_path, sets,
                                                               monkeypatch):
    """FLUX.1's T5 missing from its folder (through the command, the folder's key written with
    the trailing slash that tells it from the catalogue's flux1-dev: nothing created, no run
    written), SD 3.5's CLIP-G missing from its folder, and a header claiming more than the
    limit."""
    flux, sd3 = sets["flux1"], sets["sd3"].parent
    option_a_bucket(aws, [flux.parent, sd3])
    aws["s3"].delete_object(Bucket=BUCKET, Key="flux1-dev/t5xxl_fp16.safetensors")
    aws["s3"].delete_object(Bucket=BUCKET, Key="sd3.5_large/clip_g.safetensors")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lighthouse\n")
    before = aws["s3"].list_objects_v2(Bucket=BUCKET)["KeyCount"]

    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", "flux1-dev/",
                  "--prompt-file", str(prompts), theirs=(BUCKET,))

    assert (f"FLUX.1 model set s3://{BUCKET}/flux1-dev has no T5-XXL text encoder "
            f"(t5xxl*.safetensors or t5*.gguf) beside {flux.name}") in err
    assert err.rstrip().endswith(f" in s3://{BUCKET}/flux1-dev")  # the fix: where to put it
    assert aws["s3"].list_objects_v2(Bucket=BUCKET)["KeyCount"] == before  # no run written
    with pytest.raises(BadInput) as refusal:
        plan(aws["s3"], BUCKET, True, [sd3.name])
    assert str(refusal.value).startswith(
        f"SD 3.5 model set s3://{BUCKET}/sd3.5_large has no CLIP-G text encoder "
        "(clip_g*.safetensors) beside sd3.5_large.safetensors — put clip_g.safetensors")
    monkeypatch.setattr(bucket_sets, "MAX_HEADER_BYTES", 1024)
    with pytest.raises(BadInput, match=rf"^s3://{BUCKET}/flux1-dev/flux1-dev\.gguf has a "
                       "header over 1024 bytes"):
        plan(aws["s3"], BUCKET, True, ["flux1-dev/flux1-dev.gguf"])
