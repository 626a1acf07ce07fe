"""Stage 1: DINO on tissue tiles (Caron et al. 2021; METHOD.md stage 1), or MoCo v3, BYOL or SimCLR
(``ssl.method``).

The training module is :class:`gensis.training.dino_module.DINOModule` (the others:
:class:`gensis.training.siamese_module.SiameseModule`); this program wires the tiles, the
multi-crop augmentation and the trainer. ``resume=true`` continues the same
optimisation (data order and augmentation draws differ from an uninterrupted run).
"""

from __future__ import annotations

import lightning as L

from gensis.config.stage1 import Stage1Config
from gensis.data.augment import MultiCropAugment, uint8_transform
from gensis.data.tile_source import open_tiles
from gensis.errors import GensisError
from gensis.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from gensis.training.dino_fit import fit_dino
from gensis.training.dino_module import DINOModule
from gensis.training.siamese_module import METHOD_NAMES, SiameseModule
from gensis.training.run_dir import prepare_run_dir


def run(cfg: Stage1Config) -> int:
    if not cfg.data.path:
        raise GensisError("give data.path=<tiles> (a folder of images, a tiles.h5 or a tiling output dir)")
    transform = (uint8_transform(cfg.augment.source_size) if cfg.augment.on_gpu
                 else MultiCropAugment(cfg.crops, cfg.augment, IMAGENET_MEAN, IMAGENET_STD))
    dataset = open_tiles(cfg.data.path, transform=transform)
    out, ckpt = prepare_run_dir(cfg.out, cfg, cfg.resume, keys=dataset.keys)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = DINOModule if cfg.ssl.method == "dino" else SiameseModule
    trainer, _ = fit_dino(cfg, dataset, lambda steps, world: module(cfg, steps, world), out, ckpt,
                          curves=("train/loss", "train/lr"), title=f"stage 1 ({METHOD_NAMES[cfg.ssl.method]})")
    if trainer.is_global_zero:
        print(f"stage 1 done: {trainer.global_step} steps -> {out} (encoder.safetensors, checkpoints/last.ckpt, "
              f"metrics.csv, loss.png)")
    return 0
