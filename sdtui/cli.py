"""The `sdtui` command: the Textual app by default, the headless runner with --no-ui.

Only argparse and the protocol are imported here, so `sdtui --help` stays fast and neither
front end (nor torch) is loaded before it is needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from sdtui import __version__, errors
from sdtui.protocol import DEFAULT_SCHEDULER, SCHEDULERS, SCHEDULES

EPILOG = """\
exit codes: 0 ok, 2 bad input, 3 deployment failed, 4 generation failed, 130 interrupted

examples:
  sdtui                                   # the terminal app
  sdtui --no-ui --model sd15 --prompt "a lighthouse at dusk" -n 2
  sdtui --no-ui --model ~/Downloads/sd-v1-4.ckpt --prompt "a lighthouse at dusk"
  sdtui --list-models
  sdtui --no-ui --prompt-file prompts.txt --json
  sdtui --no-ui --status
  sdtui --no-ui --teardown --purge-volume
  sdtui --no-ui --option aws --bucket my-sd-models --model sd-v1-4.ckpt --prompt "a fox"
  sdtui --no-ui --option aws --status
  sdtui --no-ui --option aws --teardown --purge-bucket
  sdtui --no-ui --option batch --bucket my-sd-models --model sd-v1-4.ckpt \
        --prompt-file prompts.txt --gpus 4 --estimate
  sdtui --no-ui --option batch --status [RUN]
  sdtui --no-ui --option batch --cancel RUN
  sdtui serve --name NAME                 # the deployment behind A1111's web API

A bare --status, --teardown or generation uses the default deployment: the last one used, by
the app or by --no-ui (it says which); --name picks another.
"""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in sdtui's one line (not the whole usage) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(errors.EXIT_BAD_INPUT,
                  f"sdtui: error: {message} — `sdtui --help` lists the flags\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="sdtui",
        description="Deploy Stable Diffusion in a Docker container (locally or on an AWS GPU "
        "instance) and generate images from your terminal.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"sdtui {__version__}")
    p.add_argument("--no-ui", action="store_true", help="run headless (for scripts and tests)")

    d = p.add_argument_group("deployment")
    d.add_argument("--option", choices=["local", "aws", "batch"],
                   help="local: Docker on this machine (Option B); aws: a GPU instance "
                   "(Option A); batch: a prompt file over N GPUs with AWS Batch (default: the "
                   "option of the last deployment used, or local)")
    d.add_argument("--name", help="deployment name (default: the last deployment used, which "
                   "the app and --no-ui share; else the option's name)")
    d.add_argument("--model", action="append", default=[], metavar="PATH|NAME",
                   help="model: .ckpt, .safetensors or a diffusers folder, or one to fetch: a "
                   "catalogue name (--list-models), hf:ORG/REPO[/FILE][@REV], civitai:ID or "
                   "their URLs (Option B); repeat for extra files such as GFPGANv1.3.pth "
                   "(default: the deployment's last models)")
    d.add_argument("--lora-file", action="append", default=[], metavar="NAME",
                   help="a LoRA to fetch into loras/ beside the model: hf:ORG/REPO/FILE"
                   ".safetensors, civitai:ID or their URLs (Options A and batch: beside a model to "
                   "fetch); <lora:FILE:W> in the "
                   "prompt applies it (FILE: its name without .safetensors); repeatable")
    d.add_argument("--list-models", action="store_true",
                   help="print the catalogue's model names and exit")
    d.add_argument("--base-image", help="base image for the worker image build")
    d.add_argument("--volume", help="Docker volume for the model files (default sdtui-models)")
    d.add_argument("--docker-host", help="Docker engine URL (default: DOCKER_HOST or context)")
    d.add_argument("--status", nargs="?", const=True, default=False, metavar="RUN",
                   help="print what exists and its state (batch: a run's progress per shard; "
                   "its new images are downloaded)")
    d.add_argument("--teardown", action="store_true", help="remove the deployment's container")
    d.add_argument("--purge-volume", action="store_true",
                   help="with --teardown: also delete the model volume")
    d.add_argument("--force", action="store_true",
                   help="with --teardown: tear down even while another sdtui client (the app, "
                   "or another --no-ui run) is attached to the deployment")

    a = p.add_argument_group("aws (with --option aws)")
    a.add_argument("--profile", help="AWS profile (default: the standard credential chain)")
    a.add_argument("--region", help="AWS region (default: the profile's, or us-east-1)")
    a.add_argument("--bucket", help="private S3 bucket for the model files (kept on teardown)")
    a.add_argument("--instance-type", help="NVIDIA GPU instance type (default g4dn.xlarge)")
    a.add_argument("--spot", action=argparse.BooleanOptionalAction, default=None,
                   help="use a spot instance (cheaper; AWS may take it back)")
    a.add_argument("--idle-minutes", type=int, metavar="N",
                   help="the instance stops itself after N idle minutes (default 30)")
    a.add_argument("--ami", help="pin an AMI id (default: the current Deep Learning GPU AMI)")
    a.add_argument("--ssh-cidr", metavar="CIDR",
                   help="who may SSH in (default: this machine's public address /32)")
    a.add_argument("--purge-bucket", action="store_true",
                   help="with --teardown: also delete the bucket and its model files")

    b = p.add_argument_group("batch (with --option batch; also --bucket, --region, --profile, "
                             "--instance-type, --spot)")
    b.add_argument("--gpus", type=int, metavar="N",
                   help="shards of the prompt file, one GPU instance each (default 1)")
    b.add_argument("--estimate", action="store_true",
                   help="print the cost and wall time for 1, 2, 4 and 8 GPUs, create nothing")
    b.add_argument("--cancel", metavar="RUN", help="stop a run; its finished images are kept")

    g = p.add_argument_group("generation")
    g.add_argument("--prompt", help="what to draw")
    g.add_argument("--prompt-file", metavar="FILE",
                   help="one prompt per line ('-' reads stdin), like the guide's --from_file")
    g.add_argument("--negative-prompt", default="")
    g.add_argument("--steps", type=int, help="sampling steps, 1-150 (default: the model's, 30; "
                   "FLUX.1 [schnell] 4, [dev] 28)")
    g.add_argument("--cfg", type=float, help="guidance scale (default: the model's, 7.5; "
                   "FLUX.2 [klein] base 4)")
    g.add_argument("--guidance", type=float, metavar="G",
                   help="FLUX.1 [dev]'s embedded guidance, 0-100 (default 3.5; Forge's "
                   "Distilled CFG Scale); FLUX.1 runs no CFG, so --cfg does not apply to it")
    g.add_argument("--width", type=int, help="multiple of 8 (16 for FLUX.1), 64-2048 (default: "
                   "the model's own, 512 SD 1.x, 768 SD 2.x v, 1024 SDXL and FLUX.1)")
    g.add_argument("--height", type=int, help="multiple of 8, 64-2048 (default: the model's)")
    g.add_argument("--seed", type=int, help="seed; images of a batch use seed, seed+1, ...")
    g.add_argument("--scheduler", metavar="NAME",
                   help=f"one of {', '.join(SCHEDULERS)} (default: the model's, "
                   f"{DEFAULT_SCHEDULER}; euler for FLUX.1); "
                   "the guide's k_lms, k_euler_a, plms... and A1111's names (Euler a, "
                   "DPM++ 2M Karras, UniPC...) are accepted")
    g.add_argument("--schedule", metavar="NAME",
                   help=f"noise schedule (A1111's Schedule type): {', '.join(SCHEDULES)}, or "
                   "automatic (what A1111 picks for the sampler); default: the sampler's own")
    g.add_argument("-n", "--count", type=int, help="images per prompt, 1-16 (default 1)")
    g.add_argument("--init-image", metavar="FILE", type=Path,
                   help="img2img: start from this PNG or JPEG (the guide's -I)")
    g.add_argument("--mask", metavar="FILE", type=Path,
                   help="inpainting, with --init-image: repaint where this PNG/JPEG is white "
                   "(or transparent) and keep the rest (the guide's -M)")
    g.add_argument("--strength", type=float,
                   help="img2img: how much to change the init image, 0-1 (default 0.75; -f)")
    g.add_argument("--fit", choices=["resize", "crop"],
                   help="img2img: resize the init image to the size, or crop it (default resize)")
    g.add_argument("--gfpgan", type=float, metavar="F",
                   help="restore faces with GFPGANv1.3.pth at strength 0-1 (-G)")
    g.add_argument("--upscale", type=int, metavar="2|4",
                   help="upscale with Real-ESRGAN (RealESRGAN_x2plus/x4plus.pth) (-U)")
    g.add_argument("--upscale-strength", type=float, metavar="F",
                   help="blend of the upscale with a plain resize, 0-1 (default 0.75)")
    g.add_argument("--variation-amount", type=float, metavar="F",
                   help="variations: how far from the seed's image, 0-1 (-v)")
    g.add_argument("--variation-seed", type=int, metavar="N",
                   help="variations: the seed the noise moves towards (-V; default random)")
    g.add_argument("--grid", action="store_true", default=None,
                   help="also save a grid PNG of each batch beside the images (-g)")
    g.add_argument("--from-png", metavar="FILE", type=Path,
                   help="re-run the generation recorded in a saved image's metadata; other "
                   "flags override its values")
    g.add_argument("--preview-every", type=int, help=argparse.SUPPRESS)
    g.add_argument("--out", type=Path, help="where images are saved (default: ~/Pictures/sdtui)")
    g.add_argument("--json", action="store_true",
                   help="print one JSON event per line on stdout instead of paths")
    return p


# What a run does instead of generating: one at a time, and never with a prompt.
ACTIONS = ("status", "teardown", "cancel")
GENERATION_INPUTS = ("prompt", "prompt_file", "from_png")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_flags(args: argparse.Namespace) -> None:
    """Flags that contradict each other, or that the chosen front end would ignore, are refused
    before anything else happens."""
    actions = [_flag(a) for a in ACTIONS if getattr(args, a)]
    others = ["--estimate"] * bool(args.estimate) + [
        _flag(i) for i in GENERATION_INPUTS if getattr(args, i) is not None]
    for purge in ("purge_volume", "purge_bucket", "force"):
        if getattr(args, purge) and not args.teardown:
            raise errors.BadInput(f"{_flag(purge)} works only with --teardown",
                                  fix="add --teardown" + (" to delete it with the deployment"
                                                          if purge != "force" else ""))
    headless_only = actions + ["--estimate"] * bool(args.estimate) + ["--json"] * args.json
    if not args.no_ui and headless_only:
        raise errors.BadInput(f"{headless_only[0]} works only with --no-ui",
                              fix="add --no-ui (the app shows status, teardown and runs itself)")
    if len(actions) > 1 or (actions and others):
        first, second = (actions + others)[:2]
        raise errors.BadInput(f"{first} and {second} cannot be used together",
                              fix="run them as two commands")
    besides_file = [flag for flag in others if flag in ("--prompt", "--from-png")]
    if args.prompt_file is not None and besides_file:
        raise errors.BadInput(f"{besides_file[0]} and --prompt-file cannot be used together",
                              fix=f"pass the prompts in the file, or only {besides_file[0]}")


def build_serve_parser() -> argparse.ArgumentParser:
    p = Parser(prog="sdtui serve", description="Serve a deployment (Option A or B) behind "
               "AUTOMATIC1111's web API (/sdapi/v1/txt2img and its siblings), for the tools "
               "that speak it.", epilog=EPILOG.partition("\n")[0])
    p.add_argument("--name", help="deployment to serve (default: the last one used)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860, A1111's)")
    p.add_argument("--listen", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1); any other needs --api-auth")
    p.add_argument("--api-auth", metavar="USER:PASS",
                   help="HTTP basic auth, as A1111's flag (several: comma-separated)")
    p.add_argument("--out", type=Path, help="where images are saved (default: ~/Pictures/sdtui)")
    p.add_argument("--ssh-cidr", metavar="CIDR", help="Option A: who may SSH in when the "
                   "instance is started (default: this machine's public address /32)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    serving = argv[:1] == ["serve"]
    args = (build_serve_parser() if serving else build_parser()).parse_args(argv[serving:])
    if not serving and args.list_models:
        from sdtui.fetch.catalogue import listing

        print("\n".join(listing()))
        return errors.EXIT_OK
    try:
        if serving:
            from sdtui.serve.run import run as serve

            return serve(args)
        check_flags(args)
        if args.no_ui:
            from sdtui.headless import run

            return run(args)
        from sdtui.ui.images import ImageSupport

        images = ImageSupport()
        if images.protocol == "auto":
            images.start()  # the terminal probe's waits overlap the app's imports
        from sdtui.flags import given_from_args
        from sdtui.ui.app import run_app

        return run_app(given_from_args(args), images, out_dir=args.out)
    except errors.SdtuiError as exc:
        print(f"sdtui: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sdtui: interrupted", file=sys.stderr)
        return errors.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
