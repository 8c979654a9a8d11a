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
    """Each family's transformer file (the set's folder is its parent): FLUX.1 with a GGUF
    transformer, SD 3.5 as Stability's file (its VAE inside) with a T5 GGUF, Klein as BFL's
    file with the tokenizer in its sidecar."""
    from tests.helpers_klein_files import write_klein_set
    from tests.helpers_sd3_files import write_sd3_set
    from tests.test_flux_formats import references, write_set
    from tests.test_sd3_files import stability_mmditx

    root = tmp_path_factory.mktemp("bucket-sets")
    return {
        "flux1": write_set(root / "flux1-dev", "dev", references("dev"), transformer="gguf"),
        "sd3": write_sd3_set(root / "sd3.5_large", tiny_sd3["medium"], stability_mmditx(),
                             "safetensors", "gguf"),
        "flux2-klein": write_klein_set(tiny_klein["distilled"], root / "klein",
                                       "flux-2-klein-4b.safetensors"),
    }


def uploaded(aws, model: Path) -> list[str]:
    """The keys Option A's upload writes for `--model MODEL`, into an Option A bucket that also
    holds a checkpoint and a run of someone else's."""
    s3 = aws["s3"]
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging=OPTION_A)
    s3.put_object(Bucket=BUCKET, Key="sd-v1-4.ckpt", Body=b"\x80\x02 not copied")
    s3.put_object(Bucket=BUCKET, Key="runs/20250601-120000-abcd/prompts.jsonl", Body=b"{}\n")
    return upload.upload_models(s3, BUCKET, [model]).uploaded


@pytest.mark.parametrize("family", ["flux1", "sd3", "flux2-klein"])
@pytest.mark.parametrize("named", ["folder", "transformer file"])
def test_a_set_in_the_bucket_is_copied_whole(aws, sets, family, named):
    transformer = sets[family]
    model = transformer.parent if named == "folder" else transformer
    keys = uploaded(aws, model)
    gets = []
    aws["s3"].meta.events.register("provide-client-params.s3.GetObject",
                                   lambda params, **_: gets.append(dict(params)))

    files = plan(aws["s3"], BUCKET, True, [model.name])

    assert files.primary == model.name
    assert sorted(files.keys) == sorted(keys)  # every part and the sidecar, nothing else
    assert files.total_bytes == sum(
        path.stat().st_size for path in model.parent.rglob("*") if path.is_file()
        and (named == "transformer file" or path.is_relative_to(model)))
    # headers only: every GET ranged, and no more than one per model file beyond the first
    assert gets and all(get["Range"].startswith("bytes=") for get in gets)
    models = [k for k in keys if k.endswith((".safetensors", ".gguf"))]
    assert {get["Key"] for get in gets} == set(models)
    assert len(gets) <= 2 * len(models)


# The FLUX.1 set by its transformer file (its parts at the bucket root; its folder's name,
# flux1-dev, is a catalog name to fetch), the SD 3.5 set by its folder.
@pytest.mark.parametrize("family, named, leave_out, where, label", [
    ("flux1", "transformer file", "t5xxl_fp16.safetensors", "", "FLUX.1 model set {where} has "
     "no T5-XXL text encoder (t5xxl*.safetensors or t5*.gguf) beside flux1-dev.gguf"),
    ("sd3", "folder", "clip_g.safetensors", "/sd3.5_large", "SD 3.5 model set {where} has no "
     "CLIP-G text encoder (clip_g*.safetensors) beside sd3.5_large.safetensors"),
])
def test_a_set_with_a_part_missing_is_refused_before_anything(capsys, aws, tmp_path, sets,
                                                               family, named, leave_out, where,
                                                               label):
    transformer = sets[family]
    model = transformer.parent if named == "folder" else transformer
    prefix = f"{model.name}/" if named == "folder" else ""
    uploaded(aws, model)
    aws["s3"].delete_object(Bucket=BUCKET, Key=prefix + leave_out)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lighthouse\n")
    before = aws["s3"].list_objects_v2(Bucket=BUCKET)["KeyCount"]

    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", model.name,
                  "--prompt-file", str(prompts), theirs=(BUCKET,))

    where = f"s3://{BUCKET}{where}"
    assert label.format(where=where) in err
    assert err.rstrip().endswith(f" in {where}")  # the fix: where to put the part
    assert aws["s3"].list_objects_v2(Bucket=BUCKET)["KeyCount"] == before  # no run written


def test_a_header_over_the_limit_is_refused(aws, sets, monkeypatch):
    uploaded(aws, sets["flux1"])
    monkeypatch.setattr(bucket_sets, "MAX_HEADER_BYTES", 1024)
    with pytest.raises(BadInput, match=r"flux1-dev\.gguf has a header over 1024 bytes"):
        plan(aws["s3"], BUCKET, True, ["flux1-dev.gguf"])
