"""`sdtui --no-ui --option aws`: which settings win (flags > the ledger > the config's [aws]
section), bad input refused before anything exists, and status/teardown of nothing."""

from __future__ import annotations

import re
import subprocess
import sys

import cli_zygote
import pytest

from sdtui import cli
from sdtui.deploy.aws.deployment import AwsDeployment
from sdtui.deploy.settings import open_deployment
from sdtui.errors import EXIT_BAD_INPUT, DeploymentError
from sdtui.flags import given_from_args
from sdtui.ledger import Ledger

from .conftest import write_safetensors


def args(*argv: str):
    return cli.build_parser().parse_args(["--no-ui", "--option", "aws", *argv])


def deployment_from_args(ns):  # noqa: ANN001, ANN201
    """The deployment headless mode builds from these flags (the core's settings layer)."""
    return open_deployment(given_from_args(ns), for_use=not (ns.status or ns.teardown))[1]


def write_config(tmp_path, monkeypatch, text: str) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "config.toml").write_text(text)
    monkeypatch.setenv("SDTUI_CONFIG_DIR", str(folder))


def test_flags_beat_the_ledger_which_beats_the_config(model, tmp_path, monkeypatch):
    write_config(tmp_path, monkeypatch, '[aws]\nregion = "eu-west-1"\nbucket = "cfg-bucket"\n'
                 'instance_type = "g5.xlarge"\nidle_minutes = 45\n')
    ledger = Ledger.open("aws", "aws")
    ledger.set_params(bucket="ledger-bucket", region="us-west-2", models=[str(model)])

    from_ledger = deployment_from_args(args()).settings
    assert (from_ledger.bucket, from_ledger.region) == ("ledger-bucket", "us-west-2")
    assert (from_ledger.instance_type, from_ledger.idle_minutes) == ("g5.xlarge", 45)
    assert from_ledger.models == [model]

    flagged = deployment_from_args(args("--bucket", "flag-bucket", "--region", "us-east-1",
                                        "--idle-minutes", "10", "--spot", "--ssh-cidr",
                                        "203.0.113.7/32")).settings
    assert (flagged.bucket, flagged.region, flagged.idle_minutes, flagged.spot) == (
        "flag-bucket", "us-east-1", 10, True)


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return cli_zygote.run(["--no-ui", "--option", "aws", *argv], text=True, timeout=120)


def nothing_created(aws) -> bool:
    return (aws["s3"].list_buckets()["Buckets"] == []
            and aws["ec2"].describe_key_pairs()["KeyPairs"] == []
            and not [r for r in aws["iam"].list_roles()["Roles"] if r["RoleName"].startswith(
                "sdtui-")])


def test_bad_input_is_one_line_and_exit_2_before_anything_exists(model, tmp_path, aws):
    cases = [
        (["--model", str(model), "--prompt", "x"], "--bucket"),
        (["--bucket", "Bad_Name", "--model", str(model), "--prompt", "x"], "bucket name"),
        (["--bucket", "ok-bucket", "--model", str(tmp_path / "missing.ckpt"), "--prompt", "x"],
         "missing.ckpt"),
        (["--bucket", "ok-bucket", "--model", str(model), "--instance-type", "t3.micro",
          "--prompt", "x"], "--instance-type"),
        (["--bucket", "ok-bucket", "--model", str(model), "--region", "mars-1", "--prompt", "x"],
         "mars-1"),
        (["--bucket", "ok-bucket", "--model", str(model), "--steps", "0", "--prompt", "x"],
         "steps"),
    ]
    for argv, named in cases:
        done = run_cli(*argv)
        assert done.returncode == EXIT_BAD_INPUT, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and named in done.stderr, (argv, done.stderr)
    assert nothing_created(aws)
    assert Ledger.load("aws") is None


def test_status_and_teardown_of_a_deployment_that_does_not_exist(aws):
    status = run_cli("--status")
    # The default name carries this machine's and state dir's id (aws-3f9a2c).
    assert status.returncode == 0 and re.match(r"aws-[0-9a-f]{6} \(aws\): absent$", status.stdout)
    down = run_cli("--teardown")
    assert down.returncode == 0 and "removed nothing" in down.stderr


def test_aws_flags_load_no_heavy_modules():
    code = ("import sys\nimport sdtui.deploy.aws.deployment, sdtui.headless\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'textual') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_safetensors_model_is_accepted(tmp_path, aws):
    model = write_safetensors(tmp_path / "m.safetensors")
    deployment = deployment_from_args(args("--bucket", "ok-bucket", "--model", str(model),
                                           "--ssh-cidr", "203.0.113.7/32", "--prompt", "x"))
    assert [s.name for s in deployment.plan()] == [
        "identity", "ami", "bucket", "upload", "iam", "repository", "access", "instance",
        "bootstrap", "image", "container", "attach"]
    assert nothing_created(aws)  # planning creates nothing


def test_a_spot_interruption_is_reported_by_status_and_connect(model, aws):
    """moto cannot take a spot instance back: its StateReason is added to EC2's answer."""
    deployment = deployment_from_args(args("--bucket", "ok-bucket", "--model", str(model),
                                           "--ssh-cidr", "203.0.113.7/32", "--prompt", "x"))
    assert isinstance(deployment, AwsDeployment)
    ec2 = deployment.ec2
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"]
    deployment.ledger.record("instance", instance_id, spot=True)
    ec2.terminate_instances(InstanceIds=[instance_id])

    def taken_back(parsed, **kwargs):
        for reservation in parsed.get("Reservations", []):
            for found in reservation["Instances"]:
                found["StateReason"] = {"Code": "Server.SpotInstanceTermination",
                                        "Message": "Server.SpotInstanceTermination: Spot "
                                        "Instance Terminated"}

    ec2.meta.events.register("after-call.ec2.DescribeInstances", taken_back)
    status = deployment.status()
    assert status.state == "interrupted"
    assert "interrupted by AWS" in status.resources[0].note
    with pytest.raises(DeploymentError, match="interrupted by AWS"):
        deployment.connect()
