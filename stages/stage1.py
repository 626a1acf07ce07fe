"""Stage 1: DINO on tissue tiles (Caron et al. 2021; METHOD.md stage 1).

Student and EMA teacher share a timm ViT and a DINO head. Per step: the teacher sees the
global crops, the student every crop; DINO loss with centring; AdamW with per-iteration
lr / weight-decay schedules; per-tensor gradient clipping; the head's last layer frozen
for the first epoch(s); then the teacher moves towards the student with a cosine momentum
schedule. Student, teacher, centre, optimizer and step are in the checkpoint, so
``resume=true`` continues the same optimisation (data order and augmentation draws differ
from an uninterrupted run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from gensis.config.stage1 import Stage1Config
from gensis.data.augment import MultiCropAugment, eval_transform, uint8_transform
from gensis.data.batch_augment import BatchMultiCrop
from gensis.data.tile_source import open_tiles
from gensis.errors import GensisError
from gensis.evaluation.features import extract_features
from gensis.evaluation.knn import knn_predict_proba
from gensis.evaluation.split import train_test_split
from gensis.losses.dino import DINOLoss
from gensis.models.backbone import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, create_backbone, load_backbone_weights, save_encoder
from gensis.models.dino_head import DINOHead
from gensis.training.run_dir import merge_metrics, plot_metrics, prepare_run_dir
from gensis.training.schedules import cosine_schedule, teacher_temperature_schedule
from gensis.training.trainer import make_trainer, save_metrics


class MultiCropNet(nn.Module):
    """Backbone + head over a list of crops: crops of one size go through the backbone together."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        outputs, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            outputs.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        features = torch.cat(outputs)
        with torch.autocast(features.device.type, enabled=False):  # sharpening at tau 0.04 needs fp32 logits
            return self.head(features.float())


def build_backbone(cfg: Stage1Config, drop_path: bool) -> nn.Module:
    kwargs = dict(cfg.backbone.kwargs)
    if drop_path:
        kwargs.setdefault("drop_path_rate", cfg.backbone.drop_path_rate)
    else:
        kwargs.pop("drop_path_rate", None)  # the teacher has no stochastic depth
    model = create_backbone(cfg.backbone.name, cfg.backbone.img_size, kwargs)
    if cfg.backbone.weights:
        load_backbone_weights(model, cfg.backbone.weights)
    return model


class DINOModule(L.LightningModule):
    def __init__(self, cfg: Stage1Config, steps_per_epoch: int, world_size: int = 1):
        super().__init__()
        self.cfg = cfg
        student_backbone = build_backbone(cfg, drop_path=True)
        teacher_backbone = build_backbone(cfg, drop_path=False)
        dim = student_backbone.num_features
        d = cfg.dino
        self.student = MultiCropNet(student_backbone, DINOHead(dim, d.out_dim, d.hidden_dim, d.bottleneck_dim,
                                                               norm_last_layer=d.norm_last_layer))
        self.teacher = MultiCropNet(teacher_backbone, DINOHead(dim, d.out_dim, d.hidden_dim, d.bottleneck_dim))
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.loss = DINOLoss(d.out_dim, d.student_temp, d.center_momentum)
        o = cfg.optim
        self.steps_per_epoch = steps_per_epoch
        batch_total = cfg.data.batch_size * world_size
        self.lr_schedule = cosine_schedule(o.lr * batch_total / 256.0, o.min_lr, o.epochs, steps_per_epoch,
                                           o.warmup_epochs)
        self.wd_schedule = cosine_schedule(o.weight_decay, o.weight_decay_end, o.epochs, steps_per_epoch)
        self.momentum_schedule = cosine_schedule(d.momentum_teacher, 1.0, o.epochs, steps_per_epoch)
        self.teacher_temps = teacher_temperature_schedule(d.warmup_teacher_temp, d.teacher_temp,
                                                          d.warmup_teacher_temp_epochs, o.epochs)
        self.n_crops = cfg.crops.n_global + cfg.crops.n_local
        self.batch_augment = (BatchMultiCrop(cfg.crops, cfg.augment, IMAGENET_MEAN, IMAGENET_STD)
                              if cfg.augment.on_gpu else None)

    def on_train_start(self):
        if self.batch_augment is not None and self.trainer.world_size > 1:
            torch.manual_seed(self.cfg.seed + 1000 * self.global_rank)  # different augmentation draws per rank

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.batch_augment is not None and self.training:
            batch["image"] = self.batch_augment(batch["image"])
        return batch

    def _at(self, schedule: np.ndarray, step: int) -> float:
        return float(schedule[min(step, len(schedule) - 1)])

    def on_train_batch_start(self, batch, batch_idx):
        step = self.global_step
        for index, group in enumerate(self.optimizers().optimizer.param_groups):
            group["lr"] = self._at(self.lr_schedule, step)
            if index == 0:  # only the regularised group
                group["weight_decay"] = self._at(self.wd_schedule, step)

    def training_step(self, batch, batch_idx):
        crops = batch["image"]
        n_global = self.cfg.crops.n_global
        with torch.no_grad():
            teacher_out = self.teacher(crops[:n_global])
        student_out = self.student(crops)
        temp = self._at(self.teacher_temps, self.current_epoch)
        loss = self.loss(student_out, teacher_out, self.n_crops, temp)
        if not math.isfinite(loss.item()):
            raise GensisError(f"DINO loss is {loss.item()} at step {self.global_step}; lower optim.lr or check data")
        step = self.global_step
        self.log_dict({"train/loss": loss, "train/lr": self._at(self.lr_schedule, step),
                       "train/wd": self._at(self.wd_schedule, step),
                       "train/momentum": self._at(self.momentum_schedule, step), "train/teacher_temp": temp},
                      prog_bar=False, on_step=True, on_epoch=False, batch_size=crops[0].shape[0])
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return loss

    def on_after_backward(self):
        if self.current_epoch < self.cfg.dino.freeze_last_layer:
            for param in self.student.head.last_layer.parameters():
                param.grad = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """DINO clips each parameter tensor's gradient norm separately."""
        clip = self.cfg.optim.clip_grad
        if clip > 0:
            for param in self.student.parameters():
                if param.grad is not None:
                    norm = param.grad.detach().norm(2)
                    param.grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        momentum = self._at(self.momentum_schedule, max(self.global_step - 1, 0))
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

    def configure_optimizers(self):
        regularised, not_regularised = [], []
        for name, param in self.student.named_parameters():
            if not param.requires_grad:
                continue
            (not_regularised if name.endswith(".bias") or param.ndim == 1 else regularised).append(param)
        return torch.optim.AdamW([{"params": regularised}, {"params": not_regularised, "weight_decay": 0.0}],
                                 lr=float(self.lr_schedule[0]))

    def encoder_spec(self) -> EncoderSpec:
        kwargs = dict(self.cfg.backbone.kwargs)
        return EncoderSpec(name=self.cfg.backbone.name, kwargs=kwargs, img_size=self.cfg.backbone.img_size,
                           embed_dim=self.teacher.backbone.num_features)


class KNNMonitor(L.Callback):
    """kNN balanced accuracy of the teacher backbone on labeled tiles, every ``every`` epochs (rank 0)."""

    def __init__(self, path: str, every: int, batch_size: int, workers: int, img_size: int, mean, std):
        self.every = max(1, every)
        self.tiles = open_tiles(path, labels=True, transform=eval_transform(img_size, mean, std))
        if len(self.tiles.classes) < 2:
            raise GensisError(f"data.val={path}: needs at least two classes for kNN monitoring")
        self.split = train_test_split(self.tiles.labels, self.tiles.groups, 0.3, seed=0)
        self.batch_size, self.workers = batch_size, workers

    def on_train_epoch_end(self, trainer, module):
        epoch = trainer.current_epoch + 1
        if epoch % self.every and epoch != trainer.max_epochs:
            return
        if trainer.is_global_zero:
            from sklearn.metrics import balanced_accuracy_score

            features = extract_features(module.teacher.backbone, self.tiles, self.batch_size, self.workers,
                                        module.device)
            train, test = self.split
            proba = knn_predict_proba(features[train], self.tiles.labels[train], features[test],
                                      len(self.tiles.classes))
            score = balanced_accuracy_score(self.tiles.labels[test], proba.argmax(1))
            module.log("val/knn_balanced_accuracy", float(score), rank_zero_only=True)
            module.train()


class EncoderExport(L.Callback):
    """After every epoch (rank 0): ``encoder.safetensors`` + ``encoder.json`` (teacher backbone), ``metrics.csv``."""

    def on_train_epoch_end(self, trainer, module):
        if trainer.is_global_zero:
            save_encoder(trainer.default_root_dir, module.teacher.backbone, module.encoder_spec())
            save_metrics(trainer)


def teacher_checksum(module: DINOModule) -> float:
    return float(sum(p.double().sum().item() for p in module.teacher.parameters()))


class DDPConsistency(L.Callback):
    """After training, check every process holds the same teacher; write ``ddp_check.json``."""

    def on_train_end(self, trainer, module):
        value = torch.tensor([teacher_checksum(module)], dtype=torch.float64, device=module.device)
        gathered = trainer.strategy.all_gather(value).reshape(-1).cpu().tolist()
        if trainer.is_global_zero:
            consistent = max(gathered) - min(gathered) <= 1e-6 * max(1.0, abs(gathered[0]))
            (Path(trainer.default_root_dir) / "ddp_check.json").write_text(
                json.dumps({"teacher_checksums": gathered, "consistent": consistent}, indent=2))


def run(cfg: Stage1Config) -> int:
    if not cfg.data.path:
        raise GensisError("give data.path=<tiles> (a folder of images, a tiles.h5 or a tiling output dir)")
    out, ckpt = prepare_run_dir(cfg.out, cfg, cfg.resume)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    transform = (uint8_transform(cfg.augment.source_size) if cfg.augment.on_gpu
                 else MultiCropAugment(cfg.crops, cfg.augment, IMAGENET_MEAN, IMAGENET_STD))
    dataset = open_tiles(cfg.data.path, transform=transform)
    callbacks: list = [EncoderExport(), DDPConsistency()]
    if cfg.data.val:
        callbacks.append(KNNMonitor(cfg.data.val, cfg.trainer.eval_every, cfg.data.batch_size, cfg.data.workers,
                                    cfg.backbone.img_size, IMAGENET_MEAN, IMAGENET_STD))
    trainer = make_trainer(cfg.trainer, out, callbacks, epochs=cfg.optim.epochs, progress=cfg.progress)
    per_step = cfg.data.batch_size * trainer.world_size
    if len(dataset) < per_step:
        raise GensisError(f"data.path={cfg.data.path}: {len(dataset)} tiles, fewer than one batch "
                          f"({cfg.data.batch_size} x {trainer.world_size} devices); lower data.batch_size")
    # each rank gets ceil(N / world) samples (the distributed sampler pads), then drops its last partial batch
    steps_per_epoch = math.ceil(len(dataset) / trainer.world_size) // cfg.data.batch_size
    module = DINOModule(cfg, steps_per_epoch, trainer.world_size)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.data.workers, persistent_workers=cfg.data.workers > 0,
                        pin_memory=torch.cuda.is_available())
    trainer.fit(module, loader, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.is_global_zero:
        save_encoder(out, module.teacher.backbone, module.encoder_spec())
        merge_metrics(out)
        plot_metrics(out / "metrics.csv", out / "loss.png", ("train/loss", "train/lr"), title="stage 1 (DINO)")
        print(f"stage 1 done: {trainer.global_step} steps -> {out} (encoder.safetensors, checkpoints/last.ckpt, "
              f"metrics.csv, loss.png)")
    return 0
