"""What both options' fault matrices share: a fault as one line (how to inject it, how the
faulted run must end, where it applies, how to undo its cause), the cells they make, and the
checks every cell ends with."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from local_cli import one_line, read_events, wait_for

from sdtui.outputs import read_index, read_metadata

Inject = Callable[[Any], None]  # gets the option's cell


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Inject
    expect: Callable[[int, str], None]  # (return code, stderr) of the faulted run
    steps: tuple[str, ...]  # where it applies (the others: see each module's docstring)
    repair: Inject = lambda cell: None  # undo the cause before the same command runs again
    generate_at: str = "image"  # the --json event that marks "during generation"
    # During a provisioning step: once it has started, or (when set) once it logs a line, i.e.
    # is well under way (its remote script runs).
    step_at: str = "step_started"
    needs: str = ""  # "private_engine", "tmpfs"
    slow: bool = False


def cells(faults: list[Fault], steps: tuple[str, ...]) -> list:
    """One cell per fault and step it applies to; `steps` (the plan's, and "generate") keep
    the faults' step names true to the deployment."""
    unknown = {step for fault in faults for step in fault.steps} - set(steps)
    assert not unknown, f"not steps of the plan: {unknown}"
    return [pytest.param(fault, step, id=f"{fault.name}@{step}",
                         marks=[pytest.mark.slow] if fault.slow else [])
            for fault in faults for step in fault.steps]


def reached(fault: Fault, step: str, ev: dict) -> bool:
    """The condition a fault waits for: its step has started (or, for generation, the
    fault's event has arrived)."""
    if step == "generate":
        return ev["event"] == fault.generate_at
    if fault.step_at == "step_log" and ev.get("line", "").startswith("waiting for"):
        # a waiter's line (sshd still booting): a drop now hits a handshake, which the
        # waiter rightly retries, so the step is not yet "well under way"
        return False
    return ev["event"] == fault.step_at and ev.get("step") == step


# --- how the faulted run must end -------------------------------------------------------------


def killed(rc: int, err: str) -> None:
    assert rc == -signal.SIGKILL


def interrupted(rc: int, err: str) -> None:
    from sdtui.errors import EXIT_INTERRUPTED

    assert rc == EXIT_INTERRUPTED and "Traceback" not in err, err
    # provisioning: "sdtui: error: interrupted while provisioning — ..."; generating: the
    # request is cancelled, its finished images kept
    assert re.search(r"^sdtui: .*interrupted|^cancelling: ", err, re.M), err


def error_line(code: int | tuple[int, ...], *needles: str) -> Callable[[int, str], None]:
    """The run fails with one of `code`, in one line that says one of `needles`."""
    codes = code if isinstance(code, tuple) else (code,)

    def check(rc: int, err: str) -> None:
        assert rc in codes, err
        line = one_line(err)
        assert any(n in line for n in needles), line

    return check


# --- faults both options have -----------------------------------------------------------------


def kill_client(cell: Any) -> None:
    cell.proc.kill()


def interrupt_client(cell: Any) -> None:
    cell.proc.send_signal(signal.SIGINT)


def running_worker(cell: Any) -> Any:
    """The worker container, once it runs (it is created before it is started)."""
    wait_for(lambda: (w := cell.worker()) is not None and w.status == "running",
             unless=lambda: cell.proc.poll() is not None)
    return cell.worker()


def kill_container(cell: Any) -> None:
    """`docker kill` (SIGKILL)."""
    running_worker(cell).kill()


def stop_container(cell: Any) -> None:
    """`docker stop` (SIGTERM): the worker stops after its current step. Its grace before a
    SIGKILL is longer than docker's 10 s, which one step can take on a loaded CI machine."""
    running_worker(cell).stop(timeout=300)


def fill_disk(cell: Any) -> None:
    cell.disk.fill()


def free_disk(cell: Any) -> None:
    cell.disk.free()


class Tmpfs:
    """A small tmpfs for the outputs, filled on demand: the outputs disk full."""

    def __init__(self, path: Path, size: str = "4m") -> None:
        self.path = path
        path.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True)
        self.filler = path / ".filler"

    def fill(self) -> None:
        with open(self.filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=True)


# --- what every cell ends with ----------------------------------------------------------------


def fault_then_again(fault: Fault, step: str, cell: Any,
                     popen: Callable[..., subprocess.Popen],
                     run: Callable[..., subprocess.CompletedProcess], command: tuple[str, ...]
                     ) -> None:
    """The command until the fault's condition, the fault, the faulted run's end checked, its
    cause undone, then the same command again, which must succeed."""
    cell.proc = popen(*command)
    for ev in read_events(cell.proc):
        cell.seen.append(ev)
        if reached(fault, step, ev):
            fault.inject(cell)
            break
    else:
        pytest.fail(f"the run ended before {step}: {cell.proc.stderr.read()}")
    _, err = cell.proc.communicate(timeout=600)
    fault.expect(cell.proc.returncode, err)
    fault.repair(cell)

    again = run(*command)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr


def assert_nothing_lost(out: Path, finished: dict[tuple[str, int], dict]) -> None:
    """Every image the worker sent is in `out` exactly once, with its metadata intact, and
    nothing else is there (no duplicate, no half-written file)."""
    records = read_index(out)
    saved = [(r["request"], r["index"]) for r in records]
    assert sorted(saved) == sorted(finished) and len(set(saved)) == len(saved)
    assert len(saved) >= 2  # the same command again made its own two, at least
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["file"] for r in records)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for record in records:
        key = (record["request"], record["index"])
        assert read_metadata(out / record["file"])["params"] == finished[key]["params"]
