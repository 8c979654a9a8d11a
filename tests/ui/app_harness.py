"""The app as a program for tests in a real terminal: `python -m tests.ui.app_harness MODEL OUT`
runs SdtuiApp with a fake deployment whose worker is a real worker process (what cannot exist
here is the cloud instance, not the worker or the terminal).

The worker process's id is written to OUT/worker.pid, so the test can end it afterwards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sdtui.ui.app import SdtuiApp, run
from sdtui.ui.images import ImageSupport

from .conftest import fake_services
from .fakes import FakeDeployment
from .worker_relay import SubprocessWorker


def main(argv: list[str]) -> int:
    model, out = Path(argv[0]), Path(argv[1])
    generate = json.loads(argv[2]) if len(argv) > 2 else {}
    worker = SubprocessWorker(model, out / "worker.log")
    (out / "worker.pid").write_text(str(worker.proc.pid))
    services = fake_services(FakeDeployment(worker, name="term"), out, models=str(model),
                             generate=generate)
    return run(SdtuiApp(services, ImageSupport("halfcell")))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
