"""The config file: defaults when absent, typed values when present, one clear line when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdtui.config import AwsConfig, Config, GenerateConfig, LocalConfig, load_config
from sdtui.errors import EXIT_BAD_INPUT, BadInput


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch) -> Path:
    directory = tmp_path / "config"
    monkeypatch.setenv("SDTUI_CONFIG_DIR", str(directory))
    return directory


def write(config_dir: Path, text: str) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "config.toml"
    path.write_text(text)
    return path


def load_error(config_dir: Path, text: str) -> BadInput:
    write(config_dir, text)
    with pytest.raises(BadInput) as caught:
        load_config()
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert caught.value.fix
    assert "\n" not in str(caught.value)
    return caught.value


def test_missing_file_gives_the_defaults() -> None:
    config = load_config()
    assert config == Config()
    assert config.local == LocalConfig(None, "sdtui-models", "python:3.11-slim", [])
    assert config.aws.region == "us-east-1" and config.aws.instance_type == "g4dn.xlarge"
    assert (config.aws.spot, config.aws.idle_minutes, config.aws.bucket) == (False, 30, None)
    # No steps or sampler: the model's own (sdtui.protocol.with_model_defaults).
    assert config.generate == GenerateConfig(None, None, None, None, None, None)


def test_full_file_is_read_with_types(config_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    path = write(
        config_dir,
        """
        [local]
        docker_host = "ssh://me@box"
        volume = "my-models"
        base_image = "sdtui-base:offline"
        models = ["models/sd.ckpt", "~/sd2.safetensors", "/abs/sd3"]

        [aws]
        profile = "work"
        region = "eu-west-1"
        bucket = "my.sd-models"
        instance_type = "g5.xlarge"
        spot = true
        idle_minutes = 0
        models = []

        [generate]
        steps = 20
        cfg = 7
        width = 768
        height = 512
        scheduler = "k_euler_a"
        out_dir = "~/Pictures/sd"
        """,
    )
    config = load_config()

    assert config.path == path
    assert config.local == LocalConfig(
        "ssh://me@box",
        "my-models",
        "sdtui-base:offline",
        [config_dir / "models/sd.ckpt", Path("/home/someone/sd2.safetensors"), Path("/abs/sd3")],
    )
    assert config.aws == AwsConfig("work", "eu-west-1", "my.sd-models", "g5.xlarge", True, 0, [])
    assert config.generate == GenerateConfig(
        20, 7.0, 768, 512, "euler_a", Path("/home/someone/Pictures/sd")
    )
    assert isinstance(config.generate.cfg, float)


def test_partial_sections_keep_other_defaults(config_dir: Path) -> None:
    write(config_dir, "[generate]\nsteps = 50\n")
    config = load_config()
    assert config.generate.steps == 50
    assert config.generate.width is None  # the model's own size
    assert config.local == LocalConfig()


def test_an_explicit_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text('[aws]\nregion = "ap-south-1"\n')
    assert load_config(path).aws.region == "ap-south-1"


def test_unknown_key_names_file_key_and_line(config_dir: Path) -> None:
    error = load_error(config_dir, '[local]\nvolume = "v"\n\n[generate]\nstep = 20\n')
    path = config_dir / "config.toml"
    assert error.message == f"{path}, line 5: [generate] step is not a known key"
    assert "steps" in error.fix


def test_unknown_section(config_dir: Path) -> None:
    error = load_error(config_dir, "[gcp]\nregion = 1\n")
    assert "unknown section [gcp]" in error.message
    assert "[local]" in error.fix


def test_wrong_type_names_the_expected_type(config_dir: Path) -> None:
    error = load_error(config_dir, '[generate]\nsteps = "30"\n')
    assert error.message.endswith("line 2: [generate] steps must be an integer")


def test_a_boolean_is_not_a_number(config_dir: Path) -> None:
    error = load_error(config_dir, "[aws]\nidle_minutes = true\n")
    assert "[aws] idle_minutes must be an integer" in error.message


def test_spot_must_be_a_boolean(config_dir: Path) -> None:
    error = load_error(config_dir, '[aws]\nspot = "yes"\n')
    assert "[aws] spot must be true or false" in error.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[generate]\nwidth = 500\n", "[generate] width must be a multiple of 8, got 500"),
        ("[generate]\nsteps = 0\n", "[generate] steps must be from 1 to 150, got 0"),
        ("[generate]\ncfg = 99.0\n", "[generate] cfg must be from 0 to 50, got 99"),
        ('[generate]\nscheduler = "fastest"\n', "unknown scheduler 'fastest'"),
        ('[aws]\nregion = "Virginia"\n', "not a valid AWS region"),
        ('[aws]\nbucket = "My_Bucket"\n', "not a valid S3 bucket name"),
        ('[local]\nvolume = "has space"\n', "not a valid Docker volume name"),
        ('[local]\nmodels = "one.ckpt"\n', "[local] models must be a list of paths"),
        ("[local]\nmodels = [1]\n", "[local] models must be a list of paths"),
    ],
)
def test_bad_values_are_rejected_with_their_line(
    config_dir: Path, text: str, expected: str
) -> None:
    error = load_error(config_dir, text)
    assert "line 2" in error.message
    assert expected in error.message


def test_invalid_toml_names_the_line(config_dir: Path) -> None:
    error = load_error(config_dir, '[local]\nvolume = "unterminated\n')
    assert "is not valid TOML" in error.message
    assert "line 2" in error.message


def test_a_section_that_is_not_a_table(config_dir: Path) -> None:
    error = load_error(config_dir, 'local = "x"\n')
    assert "[local] must be a table" in error.message
