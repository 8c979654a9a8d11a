"""The command's start-up path: fast, and free of torch, diffusers and textual."""

import subprocess
import sys

import sdtui

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
