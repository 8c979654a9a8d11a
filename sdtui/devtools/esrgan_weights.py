"""Write randomly initialised Real-ESRGAN weights (RRDBNet, the architecture of
RealESRGAN_x4plus.pth and RealESRGAN_x2plus.pth; ×2 works on a pixel-unshuffled input), saved
the way the release files are: a BasicSR checkpoint with the network under "params_ema".

    python -m sdtui.devtools.esrgan_weights OUT.pth --scale 2|4 [--blocks N] [--seed N]

The release files have 23 RRDB blocks; tests pass fewer to stay fast on a CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def write_esrgan_weights(out: Path, scale: int = 4, blocks: int = 23, seed: int = 0) -> Path:
    if scale not in (2, 4):
        raise ValueError("scale must be 2 or 4")
    from sdtui.worker.restorers import _spandrel_architectures

    _spandrel_architectures()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    # Real-ESRGAN always upsamples ×4; its ×2 model first folds 2×2 pixels into channels.
    shuffle = 2 if scale == 2 else None
    model = ESRGAN(in_nc=3 * (shuffle or 1) ** 2, out_nc=3, num_filters=64, num_blocks=blocks,
                   scale=4, shuffle_factor=shuffle)
    with torch.no_grad():  # small weights, as trained residual nets have: outputs stay finite
        for param in model.parameters():
            param.mul_(0.1)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": model.state_dict()}, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--blocks", type=int, default=23)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_esrgan_weights(args.out, args.scale, args.blocks, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
