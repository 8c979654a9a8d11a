"""Model upload to a moto bucket over HTTP: progress, skip-unchanged, clean interruption."""

from __future__ import annotations

import hashlib
import os

import pytest

from sdtui.deploy.aws import upload
from sdtui.errors import Interrupted

from .conftest import write_safetensors

MiB = 1024 * 1024


@pytest.fixture
def big_model(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    path = write_safetensors(folder / "big.safetensors", os.urandom(40 * MiB))
    (folder / "big.yaml").write_text("model: {}\n")
    return path


@pytest.fixture
def bucket(aws):
    aws["s3"].create_bucket(Bucket="models")
    return "models"


def test_upload_reports_bytes_and_stores_the_sha256(aws, bucket, big_model):
    seen: list[tuple[int, int]] = []
    result = upload.upload_models(aws["s3"], bucket, [big_model],
                                  progress=lambda d, t: seen.append((d, t)))
    total = big_model.stat().st_size + (big_model.parent / "big.yaml").stat().st_size
    assert sorted(result.uploaded) == ["big.safetensors", "big.yaml"]
    assert result.bytes_sent == total and seen[-1] == (total, total)
    assert len(seen) > 3  # progress arrives part by part, not once at the end
    head = aws["s3"].head_object(Bucket=bucket, Key="big.safetensors")
    assert head["Metadata"]["sha256"] == hashlib.sha256(big_model.read_bytes()).hexdigest()
    assert "-" in head["ETag"]  # a multipart upload


def test_a_second_upload_sends_nothing(aws, bucket, big_model):
    first = upload.upload_models(aws["s3"], bucket, [big_model])
    second = upload.upload_models(aws["s3"], bucket, [big_model], known_digests=first.digests)
    assert second.bytes_sent == 0 and second.uploaded == []
    assert sorted(second.skipped) == ["big.safetensors", "big.yaml"]


def test_a_changed_file_is_uploaded_again(aws, bucket, big_model):
    first = upload.upload_models(aws["s3"], bucket, [big_model])
    sidecar = big_model.parent / "big.yaml"
    sidecar.write_text("model: {changed: true}\n")
    again = upload.upload_models(aws["s3"], bucket, [big_model], known_digests=first.digests)
    assert again.uploaded == ["big.yaml"]


def test_an_interrupted_upload_leaves_no_multipart_upload_and_restarts(aws, bucket, big_model):
    calls = []

    def cancel_after_first_part():
        calls.append(1)
        if len(calls) > 1:
            raise Interrupted("cancelled during upload")

    with pytest.raises(Interrupted):
        upload.upload_models(aws["s3"], bucket, [big_model], check_cancel=cancel_after_first_part)
    assert aws["s3"].list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    result = upload.upload_models(aws["s3"], bucket, [big_model])
    assert "big.safetensors" in result.uploaded
    assert aws["s3"].list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_orphans_from_a_crash_are_aborted_before_uploading(aws, bucket, big_model):
    aws["s3"].create_multipart_upload(Bucket=bucket, Key="big.safetensors")
    aws["s3"].create_multipart_upload(Bucket=bucket, Key="someone-elses.bin")
    logged: list[str] = []
    upload.upload_models(aws["s3"], bucket, [big_model], log=logged.append)
    left = aws["s3"].list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["someone-elses.bin"]  # not ours: untouched
    assert any("aborted 1 unfinished upload" in line for line in logged)
