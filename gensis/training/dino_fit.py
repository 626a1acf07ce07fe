"""Fit a DINO-style module (stage 1 or stage 3) on a dataset: trainer, loader, encoder export, plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import lightning as L
from torch.utils.data import Dataset

from gensis.config.stage1 import Stage1Config
from gensis.models.backbone import IMAGENET_MEAN, IMAGENET_STD, save_encoder
from gensis.training.dino_module import DINOModule
from gensis.training.encoder_callbacks import DDPConsistency, EncoderExport, KNNMonitor
from gensis.training.run_dir import merge_metrics, plot_metrics
from gensis.training.trainer import make_trainer, training_loader

DIAGNOSTICS = ("diag/teacher_entropy", "diag/teacher_student_kl", "diag/view_agreement")


def fit_dino(cfg: Stage1Config, dataset: Dataset, make_module: Callable[[int, int], DINOModule], out: Path,
             ckpt: Path | None, curves: tuple[str, ...], title: str) -> tuple[L.Trainer, DINOModule]:
    """Train ``make_module(steps_per_epoch, world_size)`` on ``dataset`` for ``cfg.optim.epochs``.

    The teacher backbone is exported (``encoder.safetensors`` + ``encoder.json``) and
    ``metrics.csv`` rebuilt after every epoch; at the end ``loss.png`` plots ``curves`` and the
    per-epoch diagnostics (teacher entropy, KL, view agreement) beside ln K.
    """
    callbacks: list = [EncoderExport(), DDPConsistency()]
    if cfg.data.val:
        callbacks.append(KNNMonitor(cfg.data.val, cfg.trainer.eval_every, cfg.data.batch_size, cfg.data.workers,
                                    cfg.backbone.img_size, IMAGENET_MEAN, IMAGENET_STD))
    trainer = make_trainer(cfg.trainer, out, callbacks, epochs=cfg.optim.epochs, progress=cfg.progress)
    loader = training_loader(dataset, cfg.data.batch_size, "data.batch_size", trainer, cfg.data)
    # each rank gets ceil(N / world) samples (the distributed sampler pads), then drops its last partial batch
    steps_per_epoch = math.ceil(len(dataset) / trainer.world_size) // cfg.data.batch_size
    module = make_module(steps_per_epoch, trainer.world_size)
    trainer.fit(module, loader, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.is_global_zero:
        save_encoder(out, module.teacher.backbone, module.encoder_spec())
        merge_metrics(out)
        chance = module.chance_loss()
        main = next((c for c in curves if c not in ("train/loss", "train/lr", "train/disentangle")), "train/loss")
        dino = cfg.ssl.method == "dino"
        plot_metrics(out / "metrics.csv", out / "loss.png", (*curves, *(DIAGNOSTICS if dino else ())), title=title,
                     references={main: chance, **({"diag/teacher_entropy": chance} if dino else {})})
    return trainer, module
