"""`sdtui --no-ui --option batch`: the estimate, then the run submitted and watched, its images
saved as they land; `--status [RUN]`, `--cancel RUN`. People get progress on stderr and image
paths on stdout; --json prints one event per line instead. The headless runner calls it and
hands it its reporter (sdtui.reporter, below both) and its request reader."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sdtui import errors
from sdtui.deploy.base import Deployment, provision_or_interrupt
from sdtui.deploy.batch.deployment import BatchDeployment
from sdtui.deploy.batch.estimate import format_table
from sdtui.deploy.batch.requests import run_lines
from sdtui.deploy.batch.runs import Collected, RunStatus
from sdtui.deploy.settings import open_deployment, remember_use
from sdtui.inputs import outputs_folder
from sdtui.reporter import Reporter
from sdtui.settings import Given


def run_batch(args: argparse.Namespace, given: Given, report: Reporter, *,
              print_status: Callable[[Deployment, Reporter], int],
              prompts: Callable[[], list[str]]) -> int:
    """`prompts` reads the prompt file (or --prompt); `print_status` prints a deployment's
    status as for every option."""
    if args.cancel:
        return cancel_run(args, given, report)
    if isinstance(args.status, str):
        return run_progress(args, given, report)
    if args.status:
        return print_status(_deployment(given, report, for_use=False), report)
    return submit(args, given, report, prompts)


def _deployment(given: Given, report: Reporter, *, for_use: bool) -> BatchDeployment:
    target, deployment = open_deployment(given, for_use=for_use)
    assert isinstance(deployment, BatchDeployment)
    report.using(target)
    deployment.work.warn = report.line
    return deployment


def _out_dir(args: argparse.Namespace) -> Path:
    return outputs_folder(args.out)


def submit(args: argparse.Namespace, given: Given, report: Reporter,
           prompts: Callable[[], list[str]]) -> int:
    # Every input is checked before anything is created: the prompts, the settings, then
    # (reading only) the credentials, the bucket, the model's keys and the GPU quota.
    lines = run_lines(prompts(), given.generate)
    deployment = _deployment(given, report, for_use=True)
    if note := deployment.fit_to(lines):
        report.line(note)
    try:
        deployment.preflight()
    except errors.NoCredentials:
        if not args.estimate:
            raise
        # An estimate needs no account: the built-in prices, marked as such.
        rates, table, note = deployment.estimates_without_account(lines)
        _print_estimate(report, rates, table, note)
        return errors.EXIT_OK

    rates, table = deployment.estimates(lines)
    _print_estimate(report, rates, table)
    if args.estimate:
        return errors.EXIT_OK

    try:
        provision_or_interrupt(deployment, report.deploy)
    finally:  # the default once it exists: a run refused before creating anything is forgotten
        remember_use(deployment)
    record = deployment.submit(lines, _out_dir(args))
    if report.as_json:
        report.json("submitted", run=record["run"], job_id=record["job_id"],
                    shards=record["shards"], images=sum(record["counts"]))
    else:
        report.line(f"run {record['run']}: {sum(record['counts'])} image(s) on "
                    f"{record['shards']} GPU(s) (job {record['job_id']}); Ctrl-C stops watching, "
                    f"not the run: --status {record['run']} picks it up, "
                    f"--cancel {record['run']} stops it")
    return _watch(deployment, record, report)


def _print_estimate(report: Reporter, rates: Any, table: list[Any],
                    without_account: str | None = None) -> None:
    if report.as_json:
        report.json("estimate", rates=asdict(rates), table=[asdict(e) for e in table],
                    without_account=without_account)
        return
    if without_account:
        report.line(without_account)
    for line in format_table(table, rates):
        report.line(line)


def _watch(deployment: BatchDeployment, record: dict, report: Reporter,
           out_dir: Path | None = None) -> int:
    stop = threading.Event()
    try:
        status = deployment.watch(record, lambda image: _announce(report, image),
                                  lambda s: _progress(report, s), stop, out_dir)
    except KeyboardInterrupt:
        stop.set()
        report.line(f"stopped watching; run {record['run']} goes on "
                    f"(--status {record['run']} collects its images)")
        return errors.EXIT_INTERRUPTED
    if status.state == "cancelled":
        report.line(f"run {status.run} was cancelled; {status.done}/{status.total} finished "
                    "image(s) kept")
        return errors.EXIT_INTERRUPTED
    if status.state == "failed":
        reasons = "; ".join(f"shard {s.index}: {s.reason}" for s in status.shards
                            if s.status == "FAILED" and s.reason)
        raise errors.GenerationError(f"run {status.run} failed ({status.done}/{status.total} "
                                     f"images made){': ' + reasons if reasons else ''}",
                                     fix="read the shards' logs in CloudWatch "
                                     "(/aws/batch/job), then submit again")
    return errors.EXIT_OK


def _announce(report: Reporter, image: Collected) -> None:
    if report.as_json:
        report.json("image", path=str(image.path), line=image.line, index=image.index,
                    seed=image.record["params"].get("seed"), shard=image.record.get("shard"))
    else:
        report.out.write(f"{image.path}\n")
        report.out.flush()


def _progress(report: Reporter, status: RunStatus) -> None:
    if report.as_json:
        report.json("run_status", **asdict(status))
        return
    shards = ", ".join(f"{s.index}:{s.status.lower()} {s.done}/{s.total}"
                       for s in status.shards)
    report.line(f"run {status.run} {status.state}: {status.done}/{status.total} images, "
                f"≈${status.cost_so_far_usd:.2f} so far [{shards}]")


def run_progress(args: argparse.Namespace, given: Given, report: Reporter) -> int:
    """--status RUN: each shard's state, the images so far (new ones downloaded), the cost."""
    deployment = _deployment(given, report, for_use=False)
    record = deployment.run_record(args.status)
    status = deployment.run_status(record)
    for image in deployment.collect(record, args.out):
        _announce(report, image)
    if report.as_json:
        report.json("run_status", **asdict(status))
        return errors.EXIT_OK
    print(f"run {status.run} ({status.job_id}): {status.state}, {status.done}/{status.total} "
          f"images, ≈${status.cost_so_far_usd:.2f} so far")
    for shard in status.shards:
        retried = f", attempt {shard.attempts}" if shard.attempts > 1 else ""
        reason = f" — {shard.reason}" if shard.reason else ""
        print(f"  shard {shard.index}: {shard.status.lower()}, {shard.done}/{shard.total} "
              f"images{retried}{reason}")
    return errors.EXIT_OK


def cancel_run(args: argparse.Namespace, given: Given, report: Reporter) -> int:
    deployment = _deployment(given, report, for_use=False)
    record = deployment.run_record(args.cancel)
    told = deployment.cancel(record)
    status = deployment.run_status(record)
    if report.as_json:
        report.json("cancelled", run=record["run"], jobs=told, done=status.done,
                    total=status.total)
    else:
        report.line(f"cancelled run {record['run']} ({len(told)} shard(s) told to stop); "
                    f"{status.done}/{status.total} finished image(s) are kept "
                    f"(--status {record['run']} downloads them)")
    return errors.EXIT_OK
