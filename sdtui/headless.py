"""`sdtui --no-ui`: provision (or reuse), generate, save, print the saved paths.

People get progress on stderr; scripts get one JSON event per line on stdout with --json.
Ctrl-C cancels the current request; the images it finished are still saved, the container
keeps running and the ledger stays true. A second Ctrl-C leaves at once. A request whose client
died is adopted by the next run: its remaining images are saved, with progress, before the new
prompts run (with no prompt, the run ends when it is done).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from sdtui import errors
from sdtui.client_locks import attached_elsewhere
from sdtui.deploy.base import Deployment, provision_or_interrupt
from sdtui.deploy.settings import choose, open_deployment, remember_use
from sdtui.flags import given_from_args
from sdtui.generation import init_image_data, mask_data, request_params, resolve_generate
from sdtui.grid import save_grid
from sdtui.inputs import outputs_folder, prompts_of, read_prompt_file
from sdtui.ledger import Ledger
from sdtui.reporter import Reporter
from sdtui.session import SavedImage, Session
from sdtui.settings import Given


def read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompt_file == "-":
        try:
            return prompts_of(sys.stdin.read(), "-")
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.BadInput(f"cannot read prompts from stdin: {exc}",
                                  fix="pipe UTF-8 text, one prompt per line") from None
    if args.prompt_file:
        return read_prompt_file(Path(args.prompt_file))
    return [args.prompt] if args.prompt else []


def png_params(path: Path, args: argparse.Namespace | None = None,
               report: Reporter | None = None) -> dict[str, Any]:
    """The request recorded in a saved image, for one image exactly like it. The flags given
    override its values (and excuse what it lacks); what cannot be reproduced is named in one
    warning line."""
    from sdtui.metadata.reader import request_from_png

    given = set(given_from_args(args).generate) if args is not None else set()
    params, warnings = request_from_png(path, given)
    for warning in warnings:
        if report is not None:
            report.warn(warning)
    return params


def recorded_model(given: Given, path: Path) -> Given:
    """A PNG made with a fetched model re-runs with exactly that model (the same commit, or
    the same Civitai version) unless --model names another. Both options that read --from-png
    fetch by name (the scale-out takes no --from-png)."""
    from sdtui.metadata.reader import recorded_source

    if given.deployment.get("models"):
        return given
    source = recorded_source(path)
    if source is None:
        return given
    return replace(given, deployment={**given.deployment, "models": [source]})


def generation_requests(args: argparse.Namespace, prompts: list[str | None],
                        recorded: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each prompt's request parameters, checked by the protocol itself before anything is
    created. The config and the init image are read once, however many prompts there are."""
    given = dict(given_from_args(args).generate)
    given.pop("prompt", None)
    given.setdefault("preview_every", 0)  # no previews to draw here
    settings = resolve_generate(given, recorded=recorded)
    init, mask = init_image_data(settings), mask_data(settings)
    return [request_params(settings if p is None else settings.with_prompt(p), init, mask)
            for p in prompts]


def generation_params(args: argparse.Namespace, prompt: str | None,
                      recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    return generation_requests(args, [prompt], recorded)[0]


def _interruptible(fn: Any, on_interrupt: Any) -> Any:
    """Run fn; on the first Ctrl-C call on_interrupt and keep waiting for fn to finish; on the
    second, leave at once (fn's thread is a daemon: it never holds the process)."""
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

    presses = 0

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:  # wherever the main thread is, on_interrupt included
            raise errors.Interrupted(
                "interrupted again: left without waiting for the worker",
                fix="it stops the cancelled request after the current step; run the same "
                "command again to save the images it finished")

    threading.Thread(target=target, daemon=True).start()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    interrupted = False
    try:
        # An Event, not Thread.join: the wait wakes for each press (a signal handler runs in
        # the main thread between waits), and a daemon thread never holds the process.
        while True:
            done = finished.wait(0.2)
            if presses and not interrupted:  # also when it lands as fn finishes: said, once
                interrupted = True
                on_interrupt()
            if done:
                break
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    if failure:
        raise failure[0]
    return result[0], interrupted


def run(args: argparse.Namespace) -> int:
    report = Reporter(args.json)
    given = given_from_args(args)
    option = choose(given).option
    batch_only = [flag for flag, used in (("--cancel", args.cancel), ("--estimate", args.estimate),
                                          ("--gpus", args.gpus is not None),
                                          ("--status RUN", isinstance(args.status, str)))
                  if used]
    if batch_only and option != "batch":
        raise errors.BadInput(f"{batch_only[0]} applies to the scale-out only",
                              fix="add --option batch (and --name, if it has another name)")
    if not args.teardown and option == "batch":
        from sdtui.headless_batch import run_batch

        return run_batch(args, given, report, print_status=print_status,
                         prompts=lambda: read_prompts(args))
    if args.status:
        target, deployment = open_deployment(given, for_use=False)
        report.using(target)
        return print_status(deployment, report)
    if args.teardown:
        return _teardown(args, given, report)

    # Every input is checked before anything is created.
    if args.from_png:
        requests = generation_requests(args, [args.prompt],
                                       png_params(args.from_png, args, report))
        given = recorded_model(given, Path(args.from_png))
    else:
        requests = generation_requests(args, list(read_prompts(args)))
    out_dir = _out_dir(args)
    target, deployment = open_deployment(given, for_use=True)
    report.using(target)
    try:
        provision_or_interrupt(deployment, report.deploy)
    finally:  # the default once it exists: a run refused before creating anything is forgotten
        remember_use(deployment)
    session = Session(deployment.connect(), out_dir, deployment.name, who="sdtui --no-ui")
    try:
        interrupted = _generate(session, requests, report)
    finally:
        session.close()
    return errors.EXIT_INTERRUPTED if interrupted else errors.EXIT_OK


def _out_dir(args: argparse.Namespace) -> Path:
    return outputs_folder(args.out)


def _save_unsaved(deployment: Deployment, out_dir: Path, report: Reporter) -> None:
    """Before a teardown: save the images the worker finished that no client saved (only when
    its container is running: this never starts anything)."""
    try:
        ledger = Ledger.load(deployment.name)
        if ledger is None or not ledger.resources("container"):
            return
        if deployment.status().state != "ready":
            return
        session = Session(deployment.connect(), out_dir, deployment.name,
                          who="sdtui --no-ui --teardown")
    except errors.SdtuiError:
        return
    try:
        recovery = session.take_over()
        for image in recovery.saved:
            _announce_recovered(report, image)
        if recovery.adopted is not None:  # the teardown ends it; its finished images are saved
            recovery.adopted.close()
    except errors.SdtuiError as exc:
        report.line(f"could not save the worker's unsaved images first: {exc}")
    finally:
        session.close()


def _generate(session: Session, requests: list[dict[str, Any]], report: Reporter) -> bool:
    """Save what a departed client left, follow the request it left running, then run ours.
    Returns whether Ctrl-C stopped it."""
    recovery = session.take_over()
    for image in recovery.saved:
        _announce_recovered(report, image)
    if recovery.other_client:
        if report.as_json:
            report.json("other_client")
        else:
            report.line("another sdtui is attached to this deployment; it saves its own images")
    interrupted = False
    if (adopted := recovery.adopted) is not None:
        if report.as_json:
            report.json("adopted", id=adopted.id, params=adopted.params)
        else:
            report.line(f"adopted request {adopted.id}, left running by a client that quit: "
                        f"{adopted.params.get('count', 1)} image(s) of "
                        f"{adopted.params.get('prompt', '?')!r}")
        (_saved, was_cancelled), interrupted = _interruptible(
            lambda: session.follow(adopted, report.worker), lambda: _cancel(session, report))
    for params in [] if interrupted else requests:
        (saved, was_cancelled), interrupted = _interruptible(
            lambda p=params: session.generate(p, report.worker), lambda: _cancel(session, report)
        )
        if params.get("grid") and len(saved) > 1:
            _announce_grid(report, save_grid([image.path for image in saved]))
        if interrupted or was_cancelled:
            break
    return interrupted


def _cancel(session: Session, report: Reporter) -> None:
    session.cancel()
    report.line("cancelling: the images already finished are kept (Ctrl-C again leaves now)")


def _teardown(args: argparse.Namespace, given: Given, report: Reporter) -> int:
    target = choose(given)
    aws = target.option != "local"  # Option A and the scale-out keep a bucket
    flag = "--purge-bucket" if aws else "--purge-volume"
    purge = args.purge_bucket if aws else args.purge_volume
    _, deployment = open_deployment(given, for_use=False, purge=purge, target=target)
    report.using(target)
    if purge:
        deployment.refuse_foreign_purge()
    if (others := attached_elsewhere(deployment.name)) and not args.force:
        raise errors.BadInput(
            f"another client is attached to deployment {deployment.name}: {'; '.join(others)}; "
            "a teardown stops the worker it is using",
            fix="quit it first, or add --force to tear down anyway")
    _save_unsaved(deployment, _out_dir(args), report)
    result = deployment.teardown(report.deploy, purge=purge)
    if not args.json:
        for r in result.kept:
            report.line(f"kept {r.kind} {r.id}: {r.note or f'{flag} deletes it'}")
        for r in result.left:
            report.line(f"LEFT {r.kind} {r.id}: {r.note}")
    return errors.EXIT_OK if not result.left else errors.EXIT_DEPLOYMENT


def _announce_grid(report: Reporter, path: Path) -> None:
    if report.as_json:
        report.json("grid", path=str(path))
    else:
        report.out.write(f"{path}\n")
        report.out.flush()


def _announce_recovered(report: Reporter, image: SavedImage) -> None:
    if report.as_json:
        report.json("recovered", path=str(image.path), id=image.request_id, index=image.index,
                    already_saved=image.already_saved)
    elif image.already_saved:
        report.line(f"an image the worker sent again was already saved: {image.path}")
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
        note = f" — {r.note}" if r.note else ""
        print(f"  {r.kind:<10} {r.id}  {r.state}{kept}{note}")
    if status.hourly_usd is not None:
        print(f"  cost: ${status.hourly_usd:.3f}/h, ${status.cost_so_far_usd or 0:.2f} so far")
    if status.idle_stop_in_s is not None:
        print(f"  idle auto-stop in {status.idle_stop_in_s // 60} min")
    return errors.EXIT_OK

