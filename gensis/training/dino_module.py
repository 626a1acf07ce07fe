"""The DINO training module (Caron et al. 2021; METHOD.md stage 1), shared by stages 1 and 3.

Student and EMA teacher share a timm ViT and a DINO head. Per step: the teacher sees the
global crops, the student every crop; DINO loss with centring; AdamW with per-iteration
lr / weight-decay schedules (arrays, as in ``main_dino.py``); per-tensor gradient
clipping; the head's last layer frozen for the first epoch(s); then the teacher moves
towards the student with a cosine momentum schedule. Student, teacher, centre, optimizer
and step are in the checkpoint, so ``resume=true`` continues the same optimisation.
Stage 3 subclasses it to add generated views and the disentanglement loss.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch import nn

from gensis.config.stage1 import Stage1Config
from gensis.data.batch_augment import BatchMultiCrop
from gensis.errors import GensisError
from gensis.losses.dino import DINOLoss
from gensis.losses.dino_diagnostics import teacher_entropy, teacher_student_kl, view_agreement
from gensis.models.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderSpec,
    create_backbone,
    load_backbone_weights,
)
from gensis.models.dino_head import DINOHead
from gensis.models.multi_crop_net import MultiCropNet
from gensis.training.schedules import cosine_schedule, teacher_temperature_schedule


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
        d = cfg.dino
        self.build_networks(build_backbone(cfg, drop_path=True), build_backbone(cfg, drop_path=False))
        o = cfg.optim
        self.steps_per_epoch = steps_per_epoch
        self.n_processes = world_size
        batch_total = cfg.data.batch_size * world_size
        self.lr_schedule = cosine_schedule(o.lr * batch_total / 256.0, o.min_lr, o.epochs, steps_per_epoch,
                                           o.warmup_epochs)
        self.wd_schedule = cosine_schedule(o.weight_decay, o.weight_decay_end, o.epochs, steps_per_epoch)
        self.momentum_schedule = self.make_momentum_schedule(o.epochs, steps_per_epoch)
        self.teacher_temps = teacher_temperature_schedule(d.warmup_teacher_temp, d.teacher_temp,
                                                          d.warmup_teacher_temp_epochs, o.epochs)
        self.n_crops = cfg.crops.n_global + cfg.crops.n_local
        self.pair_weights = None   # stage 3's gen.weighting=genview sets it (gensis/training/pair_weights.py)
        self._epoch_losses: list[float] = []
        self._warned = False
        self.batch_augment = (BatchMultiCrop(cfg.crops, cfg.augment, IMAGENET_MEAN, IMAGENET_STD)
                              if cfg.augment.on_gpu else None)

    def build_networks(self, student_backbone: nn.Module, teacher_backbone: nn.Module) -> None:
        """Student and teacher (backbone + DINO head) and the DINO loss with its centre."""
        d, dim = self.cfg.dino, student_backbone.num_features
        self.student = MultiCropNet(student_backbone, DINOHead(dim, d.out_dim, d.hidden_dim, d.bottleneck_dim,
                                                               norm_last_layer=d.norm_last_layer,
                                                               batch_norm=d.head_batch_norm))
        self.teacher = MultiCropNet(teacher_backbone, DINOHead(dim, d.out_dim, d.hidden_dim, d.bottleneck_dim,
                                                               batch_norm=d.head_batch_norm))
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.loss = DINOLoss(d.out_dim, d.student_temp, d.center_momentum)

    def make_momentum_schedule(self, epochs: int, steps_per_epoch: int) -> np.ndarray:
        """The teacher's EMA momentum per step (cosine from dino.momentum_teacher to momentum_teacher_end)."""
        d = self.cfg.dino
        return cosine_schedule(d.momentum_teacher, d.momentum_teacher_end, epochs, steps_per_epoch)

    def chance_loss(self) -> tuple[float, str]:
        """The loss when the targets carry no information (uniform), for the loss plot."""
        ln_k = math.log(self.cfg.dino.out_dim)
        return ln_k, f"ln K = {ln_k:.2f} (uniform targets)"

    def step_logs(self, step: int, teacher_temp: float) -> dict[str, float]:
        """The schedules' values at ``step``, logged beside the losses."""
        return {"train/lr": self._at(self.lr_schedule, step), "train/wd": self._at(self.wd_schedule, step),
                "train/momentum": self._at(self.momentum_schedule, step), "train/teacher_temp": teacher_temp}

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

    def teacher_temp(self) -> float:
        return self._at(self.teacher_temps, self.current_epoch)

    def losses(self, batch: dict, teacher_temp: float) -> dict[str, torch.Tensor]:
        """The DINO loss of a batch of multi-crops: ``{"loss": L_dino}``. Stage 3 adds its terms."""
        crops = batch["image"]
        with torch.no_grad():
            teacher_out = self.teacher(crops[:self.cfg.crops.n_global])
        student_out = self.student(crops)
        self.log_diagnostics(student_out, teacher_out, teacher_temp)
        return {"loss": self.loss(student_out, teacher_out, self.n_crops, teacher_temp)}

    @torch.no_grad()
    def log_diagnostics(self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float) -> None:
        """Epoch means of the teacher's entropy, KL(teacher || student) and the two views' agreement
        (gensis/losses/dino_diagnostics.py) on the first two global crops; call before the centre moves."""
        if self.cfg.crops.n_global < 2:
            return
        b = teacher_out.shape[0] // self.cfg.crops.n_global
        t1, t2 = teacher_out[:b].float(), teacher_out[b:2 * b].float()
        p1, p2 = self.loss.teacher_targets(t1, teacher_temp), self.loss.teacher_targets(t2, teacher_temp)
        s1, s2 = student_out[:b], student_out[b:2 * b]
        kl = 0.5 * (teacher_student_kl(p1, s2, self.loss.student_temp) +
                    teacher_student_kl(p2, s1, self.loss.student_temp))
        values = {"diag/teacher_entropy": teacher_entropy(torch.cat([p1, p2])), "diag/teacher_student_kl": kl,
                  "diag/view_agreement": view_agreement(t1 - self.loss.center, t2 - self.loss.center)}
        self.log_dict(values, on_step=False, on_epoch=True, batch_size=b, sync_dist=True)

    def on_train_epoch_start(self):
        self._epoch_losses = []

    def on_train_epoch_end(self):
        """One line when the loss still sits at ln K after the warm-ups: the targets are uniform."""
        d, o = self.cfg.dino, self.cfg.optim
        warm = max(o.warmup_epochs, d.warmup_teacher_temp_epochs, d.freeze_last_layer)
        ln_k = math.log(d.out_dim)
        if (self._epoch_losses and not self._warned and self.current_epoch + 1 > warm
                and np.mean(self._epoch_losses) >= 0.98 * ln_k):
            self._warned = True
            if self.trainer.is_global_zero:
                print(f"warning: after {self.current_epoch + 1} epochs the DINO loss is "
                      f"{np.mean(self._epoch_losses):.3f}, within 2% of ln K = {ln_k:.3f}: the teacher's targets are "
                      f"uniform and the head learns nothing. Try weaker colour augmentation (augment.strength=0.5), "
                      f"a lower dino.warmup_teacher_temp with dino.warmup_teacher_temp_epochs > 0, "
                      f"dino.head_batch_norm=true, or fewer local crops (crops.n_local)", flush=True)

    def training_step(self, batch, batch_idx):
        temp = self.teacher_temp()
        parts = self.losses(batch, temp)
        loss = parts["loss"]
        if not math.isfinite(loss.item()):
            raise GensisError(f"training loss is {loss.item()} at step {self.global_step}; lower optim.lr or "
                              f"check data")
        self._epoch_losses.append(float(parts.get("dino", loss).detach()))
        step = self.global_step
        self.log_dict({**{f"train/{name}": value for name, value in parts.items()}, **self.step_logs(step, temp)},
                      prog_bar=False, on_step=True, on_epoch=False, batch_size=batch["image"][0].shape[0])
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return loss

    def on_after_backward(self):
        if self.current_epoch < self.cfg.dino.freeze_last_layer and hasattr(self.student.head, "last_layer"):
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
        student = dict(self.student.named_parameters())   # by name: a student may have parts (a predictor)
        for name, t in self.teacher.named_parameters():     # that the teacher lacks
            t.mul_(momentum).add_(student[name].detach(), alpha=1 - momentum)

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
