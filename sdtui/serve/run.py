"""`sdtui serve`: a deployment behind A1111's web API, on this machine.

Everything that can be refused is refused before anything is started: an address other than
the loopback without --api-auth, bad credentials syntax, a port that is taken, a deployment
that does not exist. Then the deployment is brought up as the other front ends do (its steps
are skipped when it runs), what a departed client left is saved and its running request
adopted, and requests are served until Ctrl-C or SIGTERM. A worker that goes away meanwhile (an
Option A instance stopped by its idle auto-stop) is brought back the same way for the next
request.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import threading
from typing import Any

from sdtui import errors
from sdtui.deploy.base import OnEvent, provision_or_interrupt
from sdtui.deploy.settings import choose, open_deployment, remember_use
from sdtui.inputs import outputs_folder
from sdtui.ledger import Ledger
from sdtui.outputs import read_index
from sdtui.reporter import Reporter
from sdtui.serve import pending
from sdtui.serve.answers import Model
from sdtui.serve.api import Api
from sdtui.serve.http import ApiServer, parse_auth
from sdtui.serve.queue import Job, JobQueue
from sdtui.session import Session
from sdtui.settings import Given

DEFAULT_LISTEN = "127.0.0.1"
DEFAULT_PORT = 7860  # A1111's
# What `progress` says while a worker that went away is brought back, by option.
STARTING = {"aws": "starting instance", "local": "starting the worker container"}


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def credentials_for(listen: str, api_auth: str | None) -> dict[str, str]:
    """The credentials to ask for; BadInput for an open port or a malformed --api-auth."""
    if api_auth is None:
        if not _is_loopback(listen):
            raise errors.BadInput(
                f"--listen {listen} would let other machines use this deployment without a "
                "password", fix="add --api-auth USER:PASS (or listen on 127.0.0.1)")
        return {}
    try:
        return parse_auth(api_auth)
    except ValueError as exc:
        raise errors.BadInput(f"--api-auth: {exc}", fix="pass USER:PASS, or several "
                              "separated by commas") from None


def _bind(listen: str, port: int, credentials: dict[str, str], report: Reporter) -> ApiServer:
    try:
        return ApiServer((listen, port), None, credentials,
                         log=lambda line: report.line(f"api: {line}"))
    except OSError as exc:
        raise errors.BadInput(f"cannot listen on {listen}:{port}: {exc.strerror or exc}",
                              fix="pass another --port (or --listen address)") from None


def _stop_on_sigterm() -> Any:
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    return signal.signal(signal.SIGTERM, on_term)


def run(args: argparse.Namespace) -> int:
    report = Reporter(False)
    credentials = credentials_for(args.listen, args.api_auth)
    out_dir = outputs_folder(args.out)
    given = Given(name=args.name,
                  deployment={"ssh_cidr": args.ssh_cidr} if args.ssh_cidr else {})
    target = choose(given)
    if target.option == "batch":
        raise errors.BadInput("a scale-out run cannot be served: it has no worker to ask",
                              fix="serve an Option A or B deployment (--name NAME)")
    if args.ssh_cidr and target.option != "aws":
        raise errors.BadInput(f"--ssh-cidr is for Option A deployments; {target.name} is "
                              "Option B", fix="leave --ssh-cidr out")
    if Ledger.load(target.name) is None:
        raise errors.BadInput(f"there is no deployment {target.name!r} to serve",
                              fix="create it first: sdtui --no-ui --model MODEL --prompt ... "
                              "(or the app), then sdtui serve --name NAME")
    left = pending.load(target.name)  # a damaged file is refused before anything starts
    server = _bind(args.listen, args.port, credentials, report)
    previous = _stop_on_sigterm()
    try:
        target, deployment = open_deployment(given, for_use=True, target=target)
        report.using(target)
        provision_or_interrupt(deployment, report.deploy)
        remember_use(deployment)

        def reconnect(on_event: OnEvent, cancel: threading.Event) -> Session:
            """The deployment brought up again, as this command did at its start: a fresh
            deployment object (nothing cached from before, an SSH connection included)."""
            report.line(f"the worker of {target.name} is gone; starting it again for the "
                        "next request")
            _, again = open_deployment(given, for_use=True, target=target)
            again.provision(lambda ev: (on_event(ev), report.deploy(ev)), cancel)
            return Session(again.connect(), out_dir, again.name)

        queue = JobQueue(Session(deployment.connect(), out_dir, deployment.name),
                         on_saved=lambda path: report.line(f"saved {path}"),
                         deployment=target.name, reconnect=reconnect,
                         starting=STARTING[target.option])
        try:
            return _serve(server, queue, report, target.name, target.option, left)
        finally:
            queue.stop()
            queue.session.close()  # the one attached now (a gone worker's was replaced)
    except KeyboardInterrupt:
        report.line("stopped serving")
        return errors.EXIT_OK
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)


def _still_to_run(left: list[pending.Pending], session: Session, adopted: str | None
                  ) -> list[pending.Pending]:
    """What a previous `sdtui serve` left that the worker has not run: not the request it is
    running (adopted), nor one whose images are saved already."""
    done = {record.get("request") for record in read_index(session.out_dir)}
    return [p for p in left if p.rid != adopted and p.rid not in done]


def _serve(server: ApiServer, queue: JobQueue, report: Reporter, name: str, option: str,
           left: list[pending.Pending]) -> int:
    session = queue.session
    recovery = session.take_over()
    for image in recovery.saved:
        report.line(f"saved an image that finished while no client was attached: {image.path}")
    if recovery.other_client:
        report.line("another sdtui is attached to this deployment; it saves its own images")
    if recovery.adopted is not None:
        report.line(f"adopted request {recovery.adopted.id}, left running by a client that quit")
        queue.submit(Job(recovery.adopted.params, adopted=recovery.adopted))
    left = _still_to_run(left, session,
                         recovery.adopted.id if recovery.adopted is not None else None)
    queue.resume(left)
    if left:
        report.line(f"resumed {len(left)} request(s) queued before sdtui serve stopped; their "
                    "images are saved to the outputs (their clients are gone)")
    server.api = Api(queue, Model(session.client.ready or session.client.info()["ready"]))
    queue.start()
    auth = f"basic auth for {', '.join(server.credentials)}" if server.credentials else "no auth"
    report.line(f"serving {name} ({option}) at {server.url} (A1111 API, {auth}); "
                "Ctrl-C stops")
    server.serve_forever(poll_interval=0.2)
    return errors.EXIT_OK
