"""`sdtui --no-ui`: provision (or reuse), generate, save, print the saved paths.

People get progress on stderr; scripts get one JSON event per line on stdout with --json.
Ctrl-C cancels the current request; the images it finished are still saved, the container
keeps running and the ledger stays true.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from sdtui import errors, protocol
from sdtui.config import load_config
from sdtui.deploy.base import (
    CostUpdate,
    DeployEvent,
    Deployment,
    StepFinished,
    StepLog,
    StepProgress,
    StepStarted,
)
from sdtui.deploy.settings import deployment_from_args
from sdtui.grid import save_grid
from sdtui.inputs import read_init_image, read_mask
from sdtui.paths import default_outputs_dir
from sdtui.session import SavedImage, Session

_GEN_FLAGS = ("steps", "cfg", "width", "height", "seed", "scheduler", "schedule", "count",
              "preview_every", "strength", "fit", "gfpgan", "upscale", "upscale_strength",
              "variation_amount", "variation_seed", "grid")


class Reporter:
    """Renders deployment and worker events for people (stderr) or scripts (--json, stdout)."""

    def __init__(self, as_json: bool, err: TextIO | None = None, out: TextIO | None = None
                 ) -> None:
        self.as_json = as_json
        self.err, self.out = err or sys.stderr, out or sys.stdout
        self.tty = self.err.isatty()
        self._last_bar = 0.0

    def json(self, kind: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": kind, **fields}) + "\n")
        self.out.flush()

    def deploy(self, ev: DeployEvent) -> None:
        if self.as_json:
            self.json(type(ev).__name__, **asdict(ev))
            return
        match ev:
            case StepStarted(step, title):
                self.line(f"… {title}")
            case StepProgress(step, done, total, unit):
                self.bar(step, done, total, unit)
            case StepLog(step, line):
                if not self.tty:
                    self.line(f"  {step}: {line}")
            case StepFinished(step, outcome, detail, seconds):
                mark = {"done": "✓", "skipped": "↷", "failed": "✗"}[outcome]
                self.line(f"{mark} {step} {outcome} ({seconds:.1f} s) {detail}".rstrip())
            case CostUpdate(hourly, so_far, idle):
                stop = f", idle stop in {idle // 60} min" if idle is not None else ""
                self.line(f"$ {hourly:.3f}/h, ${so_far:.2f} so far{stop}")

    def worker(self, ev: dict[str, Any]) -> None:
        if self.as_json:
            self.json(ev["type"], **{k: v for k, v in ev.items() if k not in ("type", "png")})
            return
        if ev["type"] == "progress":
            self.bar(f"image {ev['index'] + 1}", ev["step"], ev["total"], "steps")
        elif ev["type"] == "image":
            self.out.write(ev["path"] + "\n")
            self.out.flush()
        elif ev["type"] == "done" and ev["cancelled"]:
            self.line(f"cancelled; {ev['images']} finished image(s) kept")

    def bar(self, label: str, done: int, total: int | None, unit: str) -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and now - self._last_bar < (0.1 if self.tty else 2.0):
            return
        self._last_bar = now
        if total:
            width = 30
            fill = int(width * done / total)
            amount = (f"{done / 2**20:.0f}/{total / 2**20:.0f} MiB" if unit == "bytes"
                      else f"{done}/{total}")
            text = f"  {label} [{'#' * fill}{'.' * (width - fill)}] {amount}"
        else:
            text = f"  {label} {done} {unit}"
        if self.tty:
            self.err.write("\r" + text + ("\n" if final else ""))
            self.err.flush()
        else:
            self.line(text)

    def line(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


def read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompt_file:
        try:
            if args.prompt_file == "-":
                text = sys.stdin.read()
            else:
                text = Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.BadInput(f"cannot read prompt file {args.prompt_file}: {exc}",
                                  fix="check the path") from None
        lines = (ln.strip() for ln in text.splitlines())
        prompts = [ln for ln in lines if ln and not ln.startswith("#")]
        if not prompts:
            raise errors.BadInput(f"prompt file {args.prompt_file} has no prompts",
                                  fix="write one prompt per line")
        return prompts
    return [args.prompt] if args.prompt else []


def png_params(path: Path) -> dict[str, Any]:
    """The request recorded in a saved image, for one image exactly like it."""
    from sdtui.outputs import read_metadata

    recorded = read_metadata(path)["params"]
    params = {k: v for k, v in recorded.items() if k in protocol.GENERATE_FIELDS and k != "id"}
    params["count"] = 1
    return params


def generation_requests(args: argparse.Namespace, prompts: list[str | None],
                        base: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each prompt's request parameters, checked by the protocol itself before anything is
    created. `base` (a saved image's params) overrides the config; flags override both. The
    config and the init image are read once, however many prompts there are."""
    defaults = load_config().generate
    shared: dict[str, Any] = {
        "negative_prompt": args.negative_prompt,
        "steps": defaults.steps,
        "cfg": defaults.cfg,
        "width": defaults.width,
        "height": defaults.height,
        "scheduler": defaults.scheduler,
    }
    shared.update(base or {})
    if args.negative_prompt and base:
        shared["negative_prompt"] = args.negative_prompt
    shared.update({k: getattr(args, k) for k in _GEN_FLAGS if getattr(args, k, None) is not None})
    if getattr(args, "init_image", None):
        shared["init_image"] = read_init_image(args.init_image)
    if getattr(args, "mask", None):
        shared["mask"] = read_mask(args.mask)
    return [_checked({**shared, **({"prompt": p} if p is not None else {})}) for p in prompts]


def generation_params(args: argparse.Namespace, prompt: str | None,
                      base: dict[str, Any] | None = None) -> dict[str, Any]:
    return generation_requests(args, [prompt], base)[0]


def _checked(params: dict[str, Any]) -> dict[str, Any]:
    try:
        checked = protocol.request("generate", id="check", **params)
    except protocol.ProtocolError as exc:
        raise errors.BadInput(str(exc).removeprefix("generate: "),
                              fix="see sdtui --help for valid values") from None
    return {k: v for k, v in checked.items() if k not in ("type", "id")}


def _interruptible(fn: Any, on_interrupt: Any) -> Any:
    """Run fn; on the first Ctrl-C call on_interrupt and keep waiting for fn to finish."""
    result: list[Any] = []
    failure: list[BaseException] = []
    finished = threading.Event()

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)
        finally:
            finished.set()

    # An Event, not Thread.join: a join interrupted by Ctrl-C can leave is_alive() wrong.
    threading.Thread(target=target, daemon=True).start()
    interrupted = False
    while True:
        try:
            if finished.wait(0.2):
                break
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            on_interrupt()
    if failure:
        raise failure[0]
    return result[0], interrupted


def run(args: argparse.Namespace) -> int:
    report = Reporter(args.json)
    if args.status:
        return print_status(deployment_from_args(args), report)
    if args.teardown:
        flag = "--purge-bucket" if args.option == "aws" else "--purge-volume"
        purge = args.purge_bucket if args.option == "aws" else args.purge_volume
        result = deployment_from_args(args).teardown(report.deploy, purge=purge)
        if not args.json:
            for r in result.kept:
                report.line(f"kept {r.kind} {r.id} (use {flag} to delete it)")
            for r in result.left:
                report.line(f"LEFT {r.kind} {r.id}: {r.note}")
        return errors.EXIT_OK if not result.left else errors.EXIT_DEPLOYMENT

    # Every input is checked before anything is created.
    if getattr(args, "from_png", None):
        requests = generation_requests(args, [args.prompt], png_params(args.from_png))
    else:
        requests = generation_requests(args, list(read_prompts(args)))
    deployment = deployment_from_args(args)
    out_dir = args.out or load_config().generate.out_dir or default_outputs_dir()

    cancel = threading.Event()
    try:
        deployment.provision(report.deploy, cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise errors.Interrupted("interrupted while provisioning",
                                 fix="run the same command again to resume") from None
    session = Session(deployment.connect(), out_dir)
    for image in session.recover():
        _announce_recovered(report, image)

    interrupted = False
    for params in requests:
        (saved, was_cancelled), interrupted = _interruptible(
            lambda p=params: session.generate(p, report.worker), session.cancel
        )
        if params.get("grid") and len(saved) > 1:
            _announce_grid(report, save_grid([image.path for image in saved]))
        if interrupted or was_cancelled:
            break
    session.client.close()
    return errors.EXIT_INTERRUPTED if interrupted else errors.EXIT_OK


def _announce_grid(report: Reporter, path: Path) -> None:
    if report.as_json:
        report.json("grid", path=str(path))
    else:
        report.out.write(f"{path}\n")
        report.out.flush()


def _announce_recovered(report: Reporter, image: SavedImage) -> None:
    if report.as_json:
        report.json("recovered", path=str(image.path), id=image.request_id, index=image.index)
    else:
        report.line(f"recovered an image that finished while detached: {image.path}")
        report.out.write(f"{image.path}\n")


def print_status(deployment: Deployment, report: Reporter) -> int:
    status = deployment.status()
    if report.as_json:
        report.json("status", **asdict(status))
        return errors.EXIT_OK
    print(f"{status.name} ({status.option}): {status.state}")
    for r in status.resources:
        kept = " (kept on teardown)" if r.kept_on_teardown else ""
        print(f"  {r.kind:<10} {r.id}  {r.state}{kept}")
    if status.hourly_usd is not None:
        print(f"  cost: ${status.hourly_usd:.3f}/h, ${status.cost_so_far_usd or 0:.2f} so far")
    if status.idle_stop_in_s is not None:
        print(f"  idle auto-stop in {status.idle_stop_in_s // 60} min")
    return errors.EXIT_OK

