"""Write randomly initialised weights of the GFPGAN v1.3 architecture (the layout of the real
GFPGANv1.3.pth: a BasicSR checkpoint with the generator under "params_ema"), for tests and
benchmarks where the real release file cannot be downloaded.

    python -m sdtui.devtools.gfpgan_weights OUT.pth [--seed N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def write_gfpgan_weights(out: Path, seed: int = 0) -> Path:
    from sdtui.worker.restorers import _spandrel_architectures

    _spandrel_architectures()
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    # The hyperparameters of GFPGANv1.3 (GFPGANv1Clean), as its release config states them.
    model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                   fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True,
                   narrow=1, sft_half=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": model.state_dict()}, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_gfpgan_weights(args.out, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
