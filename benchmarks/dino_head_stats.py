"""How far a DINO run's head is from uniform: the teacher's targets on real tiles.

    python benchmarks/dino_head_stats.py RUN_DIR [RUN_DIR ...] --tiles TILES [--n 128]

For each stage-1 or stage-3 run (its config.yaml and checkpoints/last.ckpt), the teacher's
outputs on ``--n`` tiles (every k-th of TILES, resized to the backbone's input): the mean
entropy of the targets softmax((g_t - c) / tau_t) against ln K, the largest probability
against 1 / K, and the spread of the logits across tiles. Targets near ln K / 1 / K with a
tiny spread mean the head still gives every tile nearly the same output.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gensis.cli import _all_blocks  # noqa: E402
from gensis.config.compose import validate  # noqa: E402
from gensis.config.stage1 import Stage1Config  # noqa: E402
from gensis.data.augment import eval_transform  # noqa: E402
from gensis.data.tile_source import open_tiles  # noqa: E402
from gensis.models.backbone import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from gensis.training.dino_module import DINOModule  # noqa: E402


def head_stats(run: Path, tiles_path: str, n: int) -> dict:
    from omegaconf import OmegaConf

    cfg = validate(OmegaConf.load(run / "config.yaml"), Stage1Config, "stage1", _all_blocks())
    module = DINOModule(cfg, steps_per_epoch=1)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict({k: v for k, v in state.items() if k.startswith(("teacher.", "loss."))}, strict=False)
    tiles = open_tiles(tiles_path, transform=eval_transform(cfg.backbone.img_size, IMAGENET_MEAN, IMAGENET_STD))
    step = max(1, len(tiles) // n)
    images = torch.stack([tiles[i]["image"] for i in range(0, len(tiles), step)][:n])
    with torch.no_grad():
        logits = module.teacher([images])
        targets = module.loss.teacher_targets(logits, float(module.teacher_temps[-1]))
    entropy = -(targets * targets.clamp_min(1e-12).log()).sum(-1)
    return {"run": str(run), "K": logits.shape[1], "ln_K": math.log(logits.shape[1]),
            "target_entropy": float(entropy.mean()), "max_probability": float(targets.max(-1).values.mean()),
            "logit_std_across_tiles": float(logits.std(0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--tiles", required=True)
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()
    for run in args.runs:
        s = head_stats(run, args.tiles, args.n)
        print(f"{s['run']}: K {s['K']} (ln K {s['ln_K']:.3f}), target entropy {s['target_entropy']:.3f}, "
              f"max probability {s['max_probability']:.4f} (1/K {1 / s['K']:.4f}), "
              f"logit std across tiles {s['logit_std_across_tiles']:.4f}")


if __name__ == "__main__":
    main()
