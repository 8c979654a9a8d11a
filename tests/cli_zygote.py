"""`python -m sdtui ARGV` as a finished process, without paying Python's start-up and sdtui's
imports each time (about half a CPU second, hundreds of times a run): one helper process
imports sdtui.cli once, then forks a child per run. The child is a process of its own, as a
subprocess is: its own environment, working directory, stdin, stdout and stderr files, exit
code (or -signal), and nothing it changes outlives it. It runs `python -m sdtui`'s own code
(sdtui/__main__.py). What it cannot tell apart from a fresh interpreter it is not used for:
runs that a test signals while they run (those use subprocess.Popen), and runs that need the
interpreter's start-up itself (tests/test_cli.py keeps real `python -m sdtui` runs for that).

`run(argv, env=..., cwd=..., input=..., timeout=...)` answers as subprocess.run(...,
capture_output=True) does."""

from __future__ import annotations

import atexit
import io
import json
import locale
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs in the helper process: single-threaded, so fork is safe.
_HELPER = r"""
import json, os, runpy, sys
sys.path.insert(0, sys.argv[1])
# What the runs import (no module of sdtui's reads the environment when imported)
import sdtui.cli, sdtui.headless, sdtui.deploy.local, sdtui.deploy.aws.deployment  # noqa
import sdtui.deploy.batch.deployment, sdtui.serve.run  # noqa
# A module that reads the environment when it is imported would keep the helper's in every run
# (huggingface_hub: HF_ENDPOINT, HF_HOME); sdtui imports those where it uses them.
frozen = sorted({"huggingface_hub", "httpx2", "textual", "torch"} & set(sys.modules))
if frozen:
    sys.exit(f"cli_zygote: {frozen} imported with the deployments would keep this process's "
             "environment in every run")
replies = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:  # from here on, exactly as `python -m sdtui` runs and ends
        os.setpgid(0, 0)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, request["stdin"], os.O_RDONLY),
                                (1, request["stdout"], os.O_WRONLY),
                                (2, request["stderr"], os.O_WRONLY)):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        sys.argv = [sys.executable, *request["argv"]]
        runpy.run_module("sdtui", run_name="__main__", alter_sys=True)
        sys.exit(0)  # the interpreter's own ending: exit code, traceback, atexit, threads
    replies.write(json.dumps({"pid": pid}) + "\n")
    replies.flush()
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"status": status}) + "\n")
    replies.flush()
"""


class _Helper:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _HELPER, str(REPO)], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lock = threading.Lock()

    def reply(self, timeout: float | None) -> dict | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the sdtui helper process ended ({self.proc.poll()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


_helper: _Helper | None = None


def _the_helper() -> _Helper:
    global _helper
    if _helper is None or _helper.proc.poll() is not None:
        _helper = _Helper()
        atexit.register(_helper.close)
    return _helper


def _text(data: bytes) -> str:
    """As subprocess.run(text=True) decodes: the locale's encoding, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(data), encoding=locale.getpreferredencoding(False)).read()


def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        input: str | bytes | None = None, text: bool = False,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """`python -m sdtui *argv`, finished: returncode, stdout and stderr."""
    helper = _the_helper()
    with tempfile.TemporaryDirectory(prefix="sdtui-run-") as tmp:
        files = {name: Path(tmp) / name for name in ("stdin", "stdout", "stderr")}
        data = input.encode() if isinstance(input, str) else (input or b"")
        files["stdin"].write_bytes(data)
        files["stdout"].touch()
        files["stderr"].touch()
        request = {"argv": [os.fsdecode(a) for a in argv],
                   "env": dict(os.environ if env is None else env),
                   "cwd": str(cwd or os.getcwd()),
                   **{name: str(path) for name, path in files.items()}}
        with helper.lock:
            assert helper.proc.stdin is not None
            helper.proc.stdin.write(json.dumps(request) + "\n")
            helper.proc.stdin.flush()
            pid = helper.reply(None)["pid"]  # type: ignore[index]
            done = helper.reply(timeout)
            if done is None:
                os.killpg(pid, signal.SIGKILL)
                helper.reply(None)
        out, err = files["stdout"].read_bytes(), files["stderr"].read_bytes()
    args = [sys.executable, "-m", "sdtui", *argv]
    if text:
        out, err = _text(out), _text(err)
    if done is None:
        raise subprocess.TimeoutExpired(args, timeout, out, err)  # type: ignore[arg-type]
    status = done["status"]
    code = os.waitstatus_to_exitcode(status)
    return subprocess.CompletedProcess(args, code, out, err)
