"""Option A after the model file is deleted on this machine: the bucket holds the copy this
deployment uploaded, so a rerun's upload step serves from the bucket and the worker is given the
same model as before. Once the bucket no longer holds it, the run is refused in one line. The
steps run against moto over HTTP; test_end_to_end.py runs the same rerun on the sshd "instance"
(the worker kept, one more image saved)."""

from __future__ import annotations

import pytest

from sdtui.deploy.aws.deployment import AwsDeployment
from sdtui.errors import BadInput
from sdtui.ui.forms import field_error, field_note

from .helpers import outcomes, settings
from .test_steps import provision


def upload_detail(events) -> str:
    return next(e.detail for e in events
                if type(e).__name__ == "StepFinished" and e.step == "upload")


def test_a_rerun_serves_the_deleted_model_from_the_bucket(model, aws):
    provision(model)
    worker_model = AwsDeployment(settings(model))._model_in_container()
    model.unlink()
    (model.parent / "tiny.yaml").unlink()  # its sidecar went with it

    _, events, _ = provision(model)
    assert set(outcomes(events).values()) <= {"done", "skipped"}
    assert ("0 uploaded (0 bytes), 0 unchanged; tiny.safetensors is gone from this machine, "
            "the bucket's copy serves") in upload_detail(events)
    # The worker is asked for the very model it was given: nothing is replaced.
    assert AwsDeployment(settings(model))._model_in_container() == worker_model

    # The app's form applies the same rule: the field passes, and says why.
    form = {"name": "t1", "models": str(model), "bucket": "sdtui-test-models",
            "region": "us-east-1"}
    assert field_error("aws", "models", str(model), form) is None
    assert field_note("aws", "models", form) == (f"{model} is gone from this machine, the "
                                                 "bucket's copy serves")

    aws["s3"].delete_object(Bucket="sdtui-test-models", Key="tiny.safetensors")
    with pytest.raises(BadInput) as refused:
        provision(model)
    assert refused.value.message == (f"model file {model} does not exist, and the bucket no "
                                  "longer holds its copy")
