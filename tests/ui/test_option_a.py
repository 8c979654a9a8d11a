"""Option A in the app: its form and checks, the real AwsDeployment behind the form, and the
provisioning, prompt and teardown screens with a fake cloud deployment (no instance can boot
here; the headless end-to-end test covers the real steps)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input

from sdtui.ledger import Ledger
from sdtui.paths import state_dir_id
from sdtui.ui import app as app_module
from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services, resume_deployment
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.prompt import PromptScreen
from sdtui.ui.screens.provision import ProvisionScreen
from sdtui.ui.screens.teardown import TeardownModal
from sdtui.ui.widgets.steps import StepRow

from .fakes import FakeAwsDeployment
from .test_flows import SIZE, make_app, steps_ended, text_of, until


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.asyncio
async def test_option_a_form_is_checked_inline_then_provisions_for_real(
        tiny_model, isolated_dirs, no_aws_credentials) -> None:
    app = SdtuiApp(Services(out_dir=isolated_dirs / "outputs",
                            live_checks=lambda option, values: []))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#choose-aws")
        screen = app.screen
        assert screen.query_one("#form-aws").display
        assert not screen.query_one("#form-local").display
        screen.query_one("#aws-bucket", Input).value = "Not_A_Bucket"
        screen.query_one("#aws-models", Input).value = str(tiny_model)
        screen.query_one("#aws-instance_type", Input).value = "t3.micro"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "characters S3 does not allow" in text_of(app, "#aws-bucket-error")
        assert "not a supported NVIDIA GPU type" in text_of(app, "#aws-instance_type-error")
        assert isinstance(app.screen, DeployScreen)
        screen.query_one("#aws-bucket", Input).value = "my-sd-models"
        screen.query_one("#aws-instance_type", Input).value = "g4dn.xlarge"
        await pilot.press("ctrl+s")
        # The real Option A: without credentials it stops at its first step and says why.
        await until(pilot, lambda: steps_ended(app))
        provision = app.screen
        assert type(provision.deployment).__name__ == "AwsDeployment"
        assert provision.query_one("#step-identity", StepRow).state == "failed"
        assert provision.query_one("#step-instance", StepRow).state == "pending"
        assert "credentials" in text_of(app, "#error").lower()
        assert provision.query_one("#failure-actions").display
        assert app.deployment_label == f"aws-{state_dir_id()} (aws)"  # the first one's name


@pytest.mark.asyncio
async def test_option_a_provisioning_shows_upload_cost_and_countdown(
        worker, tiny_model, isolated_dirs, monkeypatch) -> None:
    monkeypatch.setattr(app_module, "COST_POLL_S", 0.01)  # a poll finds any gap before the steps
    hold = threading.Event()
    deployment = FakeAwsDeployment(worker, hold=hold)
    app = make_app(deployment, isolated_dirs, tiny_model, option="aws", bucket="my-sd-models")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen))
        screen = app.screen
        await until(pilot, lambda: screen.query_one("#progress-row").display)
        assert "MiB" in text_of(app, "#progress-label")
        assert [row.step_name for row in screen.query(StepRow)][:4] == [
            "identity", "ami", "bucket", "upload"]
        assert not screen.query_one("#cost").display  # no instance yet: nothing costs
        assert deployment.polls == 0
        hold.set()
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        # reported by provisioning, then polled: the status bar follows the polls
        await until(pilot, lambda: deployment.polls > 0 and "$0.50 so far" in app.cost_label)
        status_bar = str(app.screen.query_one("StatusBar").render())
        assert "$0.526/h" in status_bar and "idle auto-stop in 1" in status_bar
        assert "worker: ready" in status_bar


@pytest.mark.asyncio
async def test_option_a_teardown_lists_cloud_resources_and_keeps_the_bucket(
        worker, tiny_model, isolated_dirs) -> None:
    deployment = FakeAwsDeployment(worker)
    app = make_app(deployment, isolated_dirs, tiny_model, option="aws", bucket="my-sd-models")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TeardownModal))
        deleted, kept = text_of(app, "#teardown-list").split("Kept:")
        for kind in ("instance i-0fake", "security_group sg-0fake", "key_pair sdtui-cloud",
                     "role sdtui-cloud", "instance_profile sdtui-cloud"):
            assert kind in deleted
        assert "this stops $0.526/h, $0.50 spent so far" in deleted
        assert "bucket my-sd-models" in kept and "your images in" in kept
        assert "bucket and its model files" in str(app.screen.query_one("#purge", Checkbox).label)
        await pilot.click("#confirm")
        await until(pilot, lambda: steps_ended(app, "teardown"))
        assert deployment.teardowns == [False]
        summary = text_of(app, "#error")
        assert "removed instance i-0fake" in summary and "kept bucket my-sd-models" in summary
        assert app.cost_label == ""
        assert "$" not in str(app.screen.query_one("StatusBar").render())


def test_an_option_a_ledger_resumes_as_it_was_made(isolated_dirs, no_aws_credentials) -> None:
    ledger = Ledger.open("cloud", "aws")
    ledger.set_params(region="eu-west-1", bucket="my-sd-models", instance_type="g5.xlarge",
                      spot=True, idle_minutes=45, models=[str(isolated_dirs / "gone.ckpt")])
    deployment = resume_deployment(ledger)
    s = deployment.settings  # type: ignore[attr-defined]
    assert (s.region, s.bucket, s.instance_type, s.spot, s.idle_minutes) == (
        "eu-west-1", "my-sd-models", "g5.xlarge", True, 45)


def test_cost_so_far_and_idle_countdown_move_between_reports() -> None:
    from sdtui.deploy.base import CostUpdate
    from sdtui.ui.cost import CostMeter

    meter = CostMeter()
    assert meter.label() == ""
    meter.update(CostUpdate(0.526, 1.00, 90), now=100.0)
    assert meter.label(now=100.0) == "$0.526/h · $1.00 so far · idle auto-stop in 1:30"
    assert meter.label(now=100.0 + 3600) == "$0.526/h · $1.53 so far · idle auto-stop in 0:00"
