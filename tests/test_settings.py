"""The core's typed settings: one precedence rule (flags or form > the ledger, or the values
last used once it is gone > the config file > defaults) and one default deployment, shared by
the app and `--no-ui`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cli_zygote
import pytest

from sdtui import recent
from sdtui.deploy.settings import choose, open_deployment, remember_use, resolve_settings
from sdtui.errors import BadInput, BadSetting
from sdtui.generation import GenerateSettings, request_params, resolve_generate
from sdtui.ledger import Ledger
from sdtui.paths import state_dir_id
from sdtui.settings import Given, resolve


@pytest.fixture(autouse=True)
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var, sub in (("SDTUI_STATE_DIR", "state"), ("SDTUI_CONFIG_DIR", "config"),
                     ("SDTUI_OUTPUTS_DIR", "outputs")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    return folder


def write_config(dirs: Path, text: str) -> None:
    (dirs / "config" / "config.toml").write_text(text)


def test_resolve_takes_each_field_from_the_first_layer_that_sets_it() -> None:
    settings = resolve(GenerateSettings, [{"steps": 9, "cfg": None}, {"cfg": 3.0, "steps": 50},
                                          {"width": 256, "negative_prompt": ""}])
    assert (settings.steps, settings.cfg, settings.width) == (9, 3.0, 256)
    assert settings.height == GenerateSettings().height  # no layer: the default
    assert settings.negative_prompt == ""  # "" is "not given", not a value


def test_flags_beat_the_ledger_which_beats_the_config_which_beats_defaults(dirs, model) -> None:
    write_config(dirs, '[local]\nvolume = "cfg-volume"\nbase_image = "cfg-base:1"\n')
    Ledger.open("local", "local").set_params(volume="ledger-volume", models=[str(model)])
    target = choose(Given())
    from_layers = resolve_settings(target, {}, for_use=True)
    assert (from_layers.volume, from_layers.base_image) == ("ledger-volume", "cfg-base:1")
    assert from_layers.models == [model] and from_layers.docker_host is None
    flagged = resolve_settings(target, {"volume": "flag-volume"}, for_use=True)
    assert flagged.volume == "flag-volume"


def test_flags_of_the_other_option_are_ignored(model) -> None:
    settings = resolve_settings(choose(Given(option="local")),
                                {"models": [model], "bucket": "for-aws-only"}, for_use=True)
    assert not hasattr(settings, "bucket") and settings.models == [model]


def test_values_last_used_survive_a_teardown(dirs, model) -> None:
    _, deployment = open_deployment(Given(name="box", deployment={
        "models": [model], "volume": "box-models", "base_image": "base:2"}), for_use=True)
    deployment.ledger.record("volume", "box-models", created=True)  # provisioned, in part
    remember_use(deployment)
    Ledger.load("box").delete()  # torn down: no ledger, only what was used
    again = resolve_settings(choose(Given()), {}, for_use=True)
    assert (again.name, again.volume, again.base_image, again.models) == (
        "box", "box-models", "base:2", [model])


def test_a_deployment_that_was_never_created_is_not_remembered(dirs, model) -> None:
    """A run refused before it created anything (an engine that does not answer, say) changes
    neither the default deployment nor the values last used."""
    _, deployment = open_deployment(Given(name="box", deployment={
        "models": [model], "docker_host": "unix:///nonexistent.sock"}), for_use=True)
    remember_use(deployment)
    assert choose(Given()).chosen_by == "first"
    assert resolve_settings(choose(Given(name="box")), {}, for_use=False).docker_host is None


def test_the_default_deployment_is_the_last_one_used() -> None:
    first = choose(Given())
    assert (first.name, first.option, first.chosen_by) == (
        f"local-{state_dir_id()}", "local", "first")
    recent.use_deployment("box", "local")
    assert choose(Given()) == choose(Given(option="local"))
    assert (choose(Given()).name, choose(Given()).chosen_by) == ("box", "default")
    assert choose(Given(option="aws")).name == f"aws-{state_dir_id()}"
    recent.use_deployment("cloud", "aws")
    assert (choose(Given()).name, choose(Given()).option) == ("cloud", "aws")
    other = choose(Given(option="local"))
    assert (other.name, other.chosen_by) == ("box", "option")
    named = choose(Given(name="elsewhere"))
    assert (named.name, named.option, named.chosen_by) == ("elsewhere", "local", "name")
    assert choose(Given(name="cloud")).option == "aws"  # a name's option is remembered


def test_a_damaged_recent_file_means_nothing_was_used(dirs) -> None:
    (dirs / "state" / "recent.json").write_text("{not json")
    assert choose(Given()).chosen_by == "first"
    recent.use_deployment("box", "local")
    assert json.loads((dirs / "state" / "recent.json").read_text())["current"] == ["box", "local"]


def test_a_bad_name_or_option_is_bad_input() -> None:
    with pytest.raises(BadInput, match="invalid deployment name"):
        choose(Given(name="Bad Name"))
    with pytest.raises(BadInput, match="unknown deployment option"):
        choose(Given(option="mars"))


def test_generation_settings_precedence(dirs) -> None:
    write_config(dirs, "[generate]\nsteps = 12\ncfg = 4.0\nwidth = 256\n")
    settings = resolve_generate({"steps": 3}, recorded={"cfg": 9.0, "prompt": "recorded"},
                                remembered={"width": 128, "cfg": 1.0, "unknown": 1})
    assert (settings.steps, settings.cfg, settings.width, settings.prompt) == (
        3, 9.0, 128, "recorded")
    assert settings.count == 1 and settings.height is None  # the model's own


def test_a_bad_request_value_names_its_field() -> None:
    with pytest.raises(BadSetting) as caught:
        request_params(GenerateSettings(prompt="x", steps=0))
    assert caught.value.setting == "steps" and "steps must be from 1 to 150" in str(caught.value)
    with pytest.raises(BadSetting) as empty:
        request_params(GenerateSettings(prompt=" "))
    assert empty.value.setting == "prompt"


def test_unknown_generation_keys_are_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no field"):
        resolve_generate({"stepz": 3})


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return cli_zygote.run(["--no-ui", *argv], text=True, timeout=120)


def test_bare_status_says_which_deployment_it_uses_and_name_picks_another() -> None:
    recent.use_deployment("box", "local")
    done = run_cli("--status", "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0] == {"event": "deployment", "name": "box", "option": "local",
                         "chosen_by": "default"}
    assert events[1]["event"] == "status" and events[1]["name"] == "box"
    plain = run_cli("--status")
    assert "using deployment box (local), the default: the last one used" in plain.stderr
    assert plain.stdout.startswith("box (local): ")
    other = run_cli("--status", "--name", "other")
    assert other.stdout.startswith("other (local): ") and "using" not in other.stderr
