"""`python -m sdtui.worker --model PATH [--outputs DIR]`: load the model once, then serve.
`python -m sdtui.worker batch ...` runs one shard of a scale-out run instead (see batch.py; the
image's entry point is this module, and AWS Batch can only append arguments to it);
`python -m sdtui.worker fetch-to-bucket ...` the scale-out's fetch of a model into the bucket
(see sdtui/fetch/to_bucket.py)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from sdtui import protocol

# On the CPU, OpenMP's threads spin while they wait for each other. Beside any other busy
# process one of them is descheduled and the rest spin out their time slices: a tiny generation
# took 8 times as long beside one busy loop (bench/bench_contention.py). Read by torch's OpenMP
# runtime when torch is imported, so it is set before; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EXIT_MODEL_INVALID = 2


def _claim_stdout() -> object:
    """Keep the real stdout for protocol lines and point fd 1 at stderr, so nothing a library
    prints can corrupt the event stream."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=0)


EXIT_TERMINATED = 128 + signal.SIGTERM


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_TERMINATED)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["batch"]:
        from sdtui.worker.batch import main as batch_main

        return batch_main(argv[1:])
    if argv[:1] == ["fetch-to-bucket"]:
        from sdtui.fetch.to_bucket import batch_main as fetch_main

        return fetch_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m sdtui.worker", description=__doc__)
    parser.add_argument("--model", required=True, help="diffusers folder, .ckpt or .safetensors")
    parser.add_argument("--outputs", type=Path,
                        help="the worker's own directory: finished images wait in its spool/ "
                        "until a client acknowledges them, across restarts")
    parser.add_argument("--model-sha256", metavar="HEX",
                        help="the model file's sha256, recorded in every image's metadata")
    parser.add_argument("--model-source", metavar="REF",
                        help="where a fetched model came from, pinned (hf:ORG/REPO/FILE@COMMIT, "
                        "civitai:ID), recorded in every image's metadata")
    parser.add_argument("--device", help="force a torch device (default: cuda if present)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    # Without a handler, a worker that is a container's PID 1 would ignore SIGTERM, and `docker
    # stop` would wait 10 s to kill it. While loading nothing can be lost: leave at once.
    signal.signal(signal.SIGTERM, _terminated)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = _claim_stdout()

    from sdtui.worker import activity
    from sdtui.worker.models import ModelInvalid, load_model

    try:
        with activity.heartbeat(args.outputs):  # the host must not idle-stop during the load
            model = load_model(args.model, device=args.device)
    except ModelInvalid as exc:
        out.write(protocol.encode({"type": "error", "id": None, "code": "model_invalid",
                                   "message": str(exc), "family": exc.family}))
        logging.getLogger("sdtui.worker").error("%s", exc)
        return EXIT_MODEL_INVALID

    import diffusers
    import torch

    from sdtui.worker import lora
    from sdtui.worker.restorers import listed_upscalers
    from sdtui.worker.sampling import Sampler
    from sdtui.worker.server import Worker

    info = {
        "protocol": protocol.PROTOCOL_VERSION,
        **model.info(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "loras": lora.listed(args.model),
        "upscalers": listed_upscalers(Path(args.model).parent),
    }
    worker = Worker(Sampler(model, args.model_sha256, args.model_source), info, out, args.outputs)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stop())
    if worker.serve(sys.stdin.buffer):
        # Not a normal exit: the stdin reader thread is blocked in a read that holds stdin's
        # lock, and the interpreter's shutdown would abort on it ("Fatal Python error:
        # _enter_buffered_busy"). Events are unbuffered; the spool is already on disk.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(EXIT_TERMINATED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
