"""The command's start-up path: fast, and free of torch, diffusers and textual."""

import json
import os
import subprocess
import sys

import cli_zygote
import pytest
from local_cli import one_line

import sdtui
from sdtui.ledger import Ledger

HEAVY = ("torch", "diffusers", "transformers", "textual")


def run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)


def test_help_and_cli_import_load_no_heavy_modules():
    code = (
        "import sys, contextlib, io\n"
        "import sdtui.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: sdtui.cli.main(['--help'])\n"
        "    except SystemExit: pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert run_py(code).stdout.strip() == "[]"


def test_headless_modules_load_no_heavy_modules():
    code = (
        "import sys\n"
        "import sdtui.headless, sdtui.deploy.local, sdtui.session\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert run_py(code).stdout.strip() == "[]"


def test_version_and_help_through_the_console_entry_point():
    out = subprocess.run([sys.executable, "-m", "sdtui", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"sdtui {sdtui.__version__}"
    help_text = subprocess.run([sys.executable, "-m", "sdtui", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "--no-ui" in help_text and "exit codes" in help_text


def test_bad_generation_values_exit_2_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    model = tmp_path / "m.ckpt"
    model.write_bytes(b"not a checkpoint")
    cases = [
        (["--model", str(tmp_path / "missing.ckpt"), "--prompt", "x"], "does not exist"),
        (["--model", str(model), "--prompt", "x"], "m.ckpt"),
    ]
    for argv, needle in cases:
        r = subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", *argv],
                           capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists()


# --- bad input, refused before anything is touched ------------------------------------------------

NO_ENGINE = ("--docker-host", "unix:///nonexistent/docker.sock")


def run_sdtui(tmp_path, *argv, real: bool = False, **kw) -> subprocess.CompletedProcess:
    """`sdtui ARGV` with its own state and config dirs (nothing of the machine's is used), as a
    process forked from one that has sdtui imported (tests/cli_zygote.py); `real`: a fresh
    `python -m sdtui`, for what the interpreter's start-up decides (the locale, UTF-8 mode)."""
    env = {**os.environ, "SDTUI_STATE_DIR": str(tmp_path / "state"),
           "SDTUI_CONFIG_DIR": str(tmp_path / "config"), **kw.pop("env", {})}
    if real:
        return subprocess.run([sys.executable, "-m", "sdtui", *argv], capture_output=True,
                              env=env, timeout=120, **kw)
    return cli_zygote.run(list(argv), env=env, timeout=120, **kw)


def refused(run: subprocess.CompletedProcess, code: int = 2) -> str:
    """The one line a refusal prints, checked: its exit code, no traceback, no usage block."""
    err = run.stderr.decode() if isinstance(run.stderr, bytes) else run.stderr
    assert run.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("sdtui: error: "), err
    return err.strip()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
    (["--no-ui", "--bogus"], "unrecognized arguments: --bogus"),
    (["--option", "mars"], "argument --option: invalid choice: 'mars'"),
])
def test_a_flag_argparse_refuses_is_one_line_and_a_pointer_to_help(tmp_path, argv, needle):
    line = refused(run_sdtui(tmp_path, *argv, text=True))
    assert needle in line and line.endswith("`sdtui --help` lists the flags")


@pytest.mark.parametrize(("argv", "needle"), [
    (["--no-ui", "--purge-volume", "--prompt", "x"], "--purge-volume works only with --teardown"),
    (["--no-ui", "--option", "aws", "--purge-bucket"], "--purge-bucket works only with --teardown"),
    (["--no-ui", "--teardown", "--prompt", "x"], "--teardown and --prompt cannot be used together"),
    (["--no-ui", "--status", "--teardown"], "--status and --teardown cannot be used together"),
    (["--no-ui", "--status", "--prompt-file", "p.txt"], "--status and --prompt-file cannot"),
    (["--no-ui", "--prompt", "x", "--prompt-file", "p.txt"],
     "--prompt and --prompt-file cannot be used together"),
    (["--no-ui", "--from-png", "a.png", "--prompt-file", "p.txt"],
     "--from-png and --prompt-file cannot be used together"),
    (["--teardown"], "--teardown works only with --no-ui"),
    (["--status"], "--status works only with --no-ui"),
])
def test_conflicting_flags_are_refused_in_one_line(tmp_path, argv, needle):
    line = refused(run_sdtui(tmp_path, *argv, *NO_ENGINE, text=True))
    assert needle in line
    assert not (tmp_path / "state").exists()


def test_a_prompt_that_is_not_utf8_is_refused_before_provisioning(tmp_path):
    line = refused(run_sdtui(tmp_path, "--no-ui", "--prompt", b"bad \xff byte", *NO_ENGINE,
                             real=True))
    assert "prompt is not valid UTF-8 text (byte 0xff at character 5)" in line
    for locale in ("C", "C.UTF-8"):  # stdin decoded leniently (C: UTF-8 mode) or strictly
        line = refused(run_sdtui(tmp_path, "--no-ui", "--prompt-file", "-", *NO_ENGINE,
                                 input=b"fine\nbad \xff byte\n", env={"LC_ALL": locale},
                                 real=True))
        assert "UTF-8" in line, locale
    assert not (tmp_path / "state").exists()


def test_out_that_is_a_file_is_refused_before_generating(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    for out, needle in ((taken, f"the outputs folder {taken} is a file"),
                        (taken / "sub", f"cannot be made: {taken} is a file")):
        line = refused(run_sdtui(tmp_path, "--no-ui", "--prompt", "x", "--out", str(out),
                             *NO_ENGINE, text=True))
        assert needle in line
    assert taken.read_text() == "mine" and not (tmp_path / "state").exists()


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--volume", "bad vol/../x", "volume: not a valid Docker volume name: 'bad vol/../x'"),
    ("--base-image", "a b", "base image: not a valid image name: 'a b'"),
    ("--docker-host", "tcp://[::1", "docker host: not a valid Docker engine URL: 'tcp://[::1'"),
])
def test_docker_values_are_checked_as_the_config_checks_them(tmp_path, tiny_models, flag, value,
                                                              needle):
    model = ("--model", str(tiny_models["ckpt"]))
    for action in (("--prompt", "x", *model), ("--status",), ("--teardown",)):
        line = refused(run_sdtui(tmp_path, "--no-ui", *NO_ENGINE, flag, value, *action, text=True))
        assert needle in line, action
    config = tmp_path / "config" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[local]\n{flag[2:].replace("-", "_")} = "{value}"\n')
    line = refused(run_sdtui(tmp_path, "--no-ui", "--status", text=True))
    assert needle.split(": ", 1)[1] in line  # the same check, naming the file's line instead
    assert not (tmp_path / "state").exists()


def test_status_without_an_engine_exits_3(tmp_path, monkeypatch):
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    Ledger.open("box", "local").record("volume", "box-models", created=True)
    line = refused(run_sdtui(tmp_path, "--no-ui", "--name", "box", "--status", *NO_ENGINE,
                         text=True), code=3)
    assert "cannot reach the Docker engine at unix:///nonexistent/docker.sock" in line


def test_a_run_that_created_nothing_is_not_remembered(tmp_path, tiny_models):
    """A one-off --docker-host that does not answer: the next run does not use it, and the
    deployment that never existed does not become the default."""
    failed = run_sdtui(tmp_path, "--no-ui", "--name", "probe", "--model", str(tiny_models["ckpt"]),
                   "--prompt", "x", *NO_ENGINE, text=True)
    assert failed.returncode == 3, failed.stderr
    assert "sdtui: error: cannot reach the Docker engine" in one_line(failed.stderr)
    status = run_sdtui(tmp_path, "--no-ui", "--status", "--json", text=True)
    assert status.returncode == 0, status.stderr
    first = json.loads(status.stdout.splitlines()[0])
    assert first["name"].startswith("local-") and first["chosen_by"] == "first"
    recent = tmp_path / "state" / "recent.json"
    assert not recent.exists() or "nonexistent" not in recent.read_text()


def test_text_from_a_png_reaches_the_terminal_escaped(tmp_path):
    """A PNG's text chunks are the file's author's: an escape sequence (OSC sets the terminal's
    title) or a newline forging an error line is shown escaped, never acted on."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, "
                  'Size: 64x64, Clip skip: "2\\u001b]0;owned\\u0007", '
                  'ENSD: "1\\nsdtui: error: forged"')
    png = tmp_path / "made.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    run = run_sdtui(tmp_path, "--no-ui", "--from-png", str(png), *NO_ENGINE, text=True)
    (warning,) = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
    assert "Clip skip: 2\\x1b]0;owned\\x07, ENSD: 1\\nsdtui: error: forged;" in warning
    assert "\x1b" not in run.stderr and "\x07" not in run.stderr
    assert "forged" not in one_line(run.stderr)  # the one error line is sdtui's own


def test_a_forked_run_answers_as_a_fresh_python_m_sdtui_does(tmp_path):
    """The helper the tests above run sdtui through (tests/cli_zygote.py) against a real
    `python -m sdtui`: the same exit code, stdout and stderr, its environment included."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text('[local]\nvolume = "bad vol"\n')
    for argv in (["--no-ui", "--bogus"], ["--version"], ["--no-ui", "--status"],
                 ["--no-ui", "--status", "--json", *NO_ENGINE]):
        forked = run_sdtui(tmp_path, *argv, text=True)
        real = run_sdtui(tmp_path, *argv, text=True, real=True)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            real.returncode, real.stdout, real.stderr), argv
