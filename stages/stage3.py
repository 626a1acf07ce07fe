"""Stage 3: Gen-DINO (Gen-SIS, Belagali et al. 2024; METHOD.md stage 4).

DINO with the stage-1 recipe (same schedules, from scratch unless ``init=``), plus two
parts that can each be switched off for ablations:

- generated views (``gen.p``): with probability p a sample's second global crop is cut from
  one of its generated views (without solarisation), so the global pair is (real tile,
  generated view); real tiles are first brought to the views' resolution, so that the pair
  cannot be told apart by sharpness (gensis/data/gen_dino_tiles.py);
- disentanglement (``disentangle.weight`` = lambda): the student sees a view of an
  interpolated image, its target is the teacher's outputs on views of the two source
  tiles mixed by alpha before centring and sharpening (gensis/losses/disentangle.py);
  ``disentangle.target=self``, a control, makes those two views of the interpolated
  image itself instead (gensis/data/gen_dino_tiles.py).

Loss: L_dino + lambda * L_dis / P, P the number of crop pairs L_dino averages over
(n_global * (n_crops - 1)), so that lambda = 1 weighs the task like one DINO crop pair.
Checkpoint, resume, DDP, bf16, logs and the encoder export are those of stage 1
(gensis/training/dino_module.py, dino_fit.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import torch

from gensis.config.stage3 import Stage3Config
from gensis.data.gen_dino_tiles import GenDINOTiles
from gensis.data.tile_source import open_tiles
from gensis.data.views_store import check_views_store
from gensis.models.backbone import encoder_hash
from gensis.errors import GensisError
from gensis.losses.dino import DINOLoss
from gensis.losses.disentangle import DisentanglementLoss
from gensis.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from gensis.training.dino_fit import fit_dino
from gensis.training.dino_module import DINOModule
from gensis.training.pair_weights import PairWeights
from gensis.training.generated_views import advance_curriculum, flat_interpolations, view_logs
from gensis.training.siamese_module import METHOD_NAMES, SiameseModule
from gensis.training.run_dir import prepare_run_dir


class GenDINOModule(DINOModule):
    def __init__(self, cfg: Stage3Config, steps_per_epoch: int, world_size: int = 1):
        super().__init__(cfg, steps_per_epoch, world_size)
        self.disentangle_loss = DisentanglementLoss(cfg.dino.student_temp)
        if cfg.gen.weighting == "genview":
            self.pair_weights = PairWeights(cfg.encoder, cfg.gen.gamma)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        advance_curriculum(self)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        """Several interpolated images per item as one batch; ``augment.on_gpu``: cut every crop on the device,
        the generated ones included."""
        batch = flat_interpolations(batch)
        if self.batch_augment is None or not self.training:
            return batch
        c, make = self.cfg.crops, self.batch_augment
        crops = make(batch["image"])
        if self.cfg.gen.p > 0:
            generated = make.view(batch["generated_image"].float() / 255.0, c.global_size, c.global_scale, 0.1,
                                  0.0)  # the generated view's global slot has no solarisation
            crops[1] = torch.where(batch["generated"][:, None, None, None], generated, crops[1])
        batch["image"] = crops
        if "interp" in batch:
            batch["interp"] = [make.view(x.float() / 255.0, c.global_size, c.global_scale, 0.5, 0.0)
                               for x in batch["interp"]]
        return batch

    def losses(self, batch: dict, teacher_temp: float) -> dict[str, torch.Tensor]:
        """L_dino on the multi-crops (+ lambda * L_dis on the interpolated views): ``loss``, ``dino``, ..."""
        crops, n_global = batch["image"], self.cfg.crops.n_global
        interp = batch.get("interp")
        b, m = crops[0].shape[0], len(interp[0]) if interp else 0   # m: interpolated images
        # the interpolated view goes right after the global crops, so equal sizes share one backbone call
        student_in = [*crops[:n_global], *([interp[0]] if interp else []), *crops[n_global:]]
        with torch.no_grad():
            teacher_out = self.teacher([*crops[:n_global], *(interp[1:] if interp else [])])
        student_out = self.student(student_in)
        split = n_global * b
        student_dino = student_out if not interp else torch.cat([student_out[:split], student_out[split + m:]])
        self.log_diagnostics(student_dino, teacher_out[:split], teacher_temp)
        weights = self.pair_weights(crops[0], crops[1]) if self.pair_weights else None
        # both terms see this step's centre c; it moves (with the global crops only) after both
        dino = self.loss(student_out=student_dino, teacher_out=teacher_out[:split], n_crops=self.n_crops,
                         teacher_temp=teacher_temp, update_center=False, sample_weights=weights)
        parts = {"dino": dino, **view_logs(batch)}
        if weights is not None:
            parts["pair_weight_max"] = weights.max()
        loss = dino
        if interp:
            first, second = teacher_out[split:].chunk(2)
            dis = self.disentangle_loss(student_out[split:split + m], first, second, batch["alpha"],
                                        self.loss.center, teacher_temp)
            loss = loss + self.cfg.disentangle.weight * dis / DINOLoss.n_pairs(n_global, self.n_crops)
            parts["disentangle"] = dis
        self.loss.update_center(teacher_out[:split])
        return {"loss": loss, **parts}


class GenSiameseModule(SiameseModule):
    """MoCo v3, BYOL or SimCLR with generated views and the disentanglement task
    (gensis/training/siamese_module.py); crops cut on the device, and pairs weighed, as Gen-DINO does."""

    def __init__(self, cfg: Stage3Config, steps_per_epoch: int, world_size: int = 1):
        super().__init__(cfg, steps_per_epoch, world_size)
        if cfg.gen.weighting == "genview":
            self.pair_weights = PairWeights(cfg.encoder, cfg.gen.gamma)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        advance_curriculum(self)

    on_after_batch_transfer = GenDINOModule.on_after_batch_transfer


def init_weights(path: str) -> str:
    """``init=``: an encoder run dir (its encoder.safetensors) or a weights file."""
    target = Path(path)
    if target.is_dir():
        target = target / "encoder.safetensors"
        if not target.is_file():
            raise GensisError(f"init={path}: no encoder.safetensors in that folder; give an encoder run dir "
                              f"(gensis stage1) or a weights file")
    elif not target.is_file():
        raise GensisError(f"init={path}: no such file or folder")
    return str(target)


def run(cfg: Stage3Config) -> int:
    if not cfg.data.path:
        raise GensisError("give data.path=<tiles> (the tiles the views store was generated for)")
    if cfg.uses_views and not cfg.views:
        raise GensisError("give views=<views.h5> (gensis generate), or switch both parts off with gen.p=0 "
                          "disentangle.weight=0")
    if cfg.gen.p > 0 and cfg.crops.n_global < 2:
        raise GensisError(f"gen.p={cfg.gen.p} pairs a real and a generated global crop: crops.n_global must be "
                          f">= 2, got {cfg.crops.n_global}")
    if cfg.gen.weighting == "genview" and not cfg.encoder:
        raise GensisError("gen.weighting=genview reads a frozen encoder's patch tokens: give encoder=<the stage-1 "
                          "encoder run the views were generated with>")
    if cfg.init:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, weights=init_weights(cfg.init)))
    tiles = open_tiles(cfg.data.path)
    interpolations = cfg.disentangle.weight > 0
    views = {}
    if cfg.uses_views:
        views = check_views_store(cfg.views, tiles.keys, need_views=cfg.gen.p > 0,
                                  need_interpolations=interpolations, source=cfg.data.path,
                                  encoder_sha=encoder_hash(cfg.encoder) if cfg.encoder else None, encoder=cfg.encoder)
    out, ckpt = prepare_run_dir(cfg.out, cfg, cfg.resume, keys=tiles.keys, views=views)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dataset = GenDINOTiles(tiles, cfg.views, cfg.gen.p, interpolations, cfg.crops, cfg.augment, IMAGENET_MEAN,
                           IMAGENET_STD, on_device=cfg.augment.on_gpu, curriculum=cfg.gen.curriculum,
                           interp_target=cfg.disentangle.target, interp_per_item=cfg.disentangle.per_item)
    method = cfg.ssl.method
    curves = ("train/loss", f"train/{method}", *(("train/disentangle",) if interpolations else ()), "train/lr")
    module = GenDINOModule if method == "dino" else GenSiameseModule
    trainer, _ = fit_dino(cfg, dataset, lambda steps, world: module(cfg, steps, world), out, ckpt,
                          curves=curves, title=f"stage 3 (Gen-{METHOD_NAMES[method]}, gen.p={cfg.gen.p}, "
                                               f"lambda={cfg.disentangle.weight})")
    if trainer.is_global_zero:
        print(f"stage 3 done: {trainer.global_step} steps -> {out} (encoder.safetensors, checkpoints/last.ckpt, "
              f"metrics.csv, loss.png)")
    return 0
