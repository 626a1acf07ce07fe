"""MoCo v3, BYOL and SimCLR in the loop of stages 1 and 3 (``ssl.method``; METHOD.md, related work).

Everything but the heads and the loss is DINO's (gensis/training/dino_module.py): multi-crop
data, lr / weight-decay schedules, AdamW, per-tensor clipping, the momentum-encoder update,
checkpoint, resume, DDP and the export of the teacher (here: momentum / target) backbone.

- MoCo v3 (Chen et al. 2021): online backbone + projector + predictor, momentum backbone +
  projector; 2 tau InfoNCE of each crop's query against each other global crop's key
  (gensis/losses/info_nce.py), keys of every process as negatives.
- BYOL (Grill et al. 2020): the same networks; 2 - 2 cos of each crop's prediction against each
  other global crop's target projection (gensis/losses/byol.py).
- SimCLR (Chen et al. 2020): backbone + projector, no momentum (the exported "teacher" is a copy
  of the network, refreshed after every step, or with ``ssl.simclr_ema`` its EMA); NT-Xent of each
  global crop with each later crop (gensis/losses/nt_xent.py).

With a batch from stage 3, generated views take the second global crop (the data does this)
and the interpolated image's target is the alpha-mix of its sources' targets
(gensis/losses/mixed_target.py), weighed by ``disentangle.weight`` / the number of crop pairs
(with ``disentangle.target=self`` the data brings two more views of the interpolated image as its "sources").
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gensis.losses.byol import byol_loss
from gensis.losses.info_nce import info_nce
from gensis.losses.mixed_target import mixed_target
from gensis.losses.nt_xent import nt_xent
from gensis.models.multi_crop_net import MultiCropNet
from gensis.models.projection_heads import ProjectionHead
from gensis.training.dino_module import DINOModule
from gensis.training.generated_views import view_logs
from gensis.training.schedules import cosine_schedule


METHOD_NAMES = {"dino": "DINO", "mocov3": "MoCo v3", "byol": "BYOL", "simclr": "SimCLR"}


class SiameseModule(DINOModule):
    def build_networks(self, student_backbone: nn.Module, teacher_backbone: nn.Module) -> None:
        s, dim = self.cfg.ssl, student_backbone.num_features
        self.student = MultiCropNet(student_backbone, ProjectionHead.for_method(
            s.method, dim, s.hidden_dim, s.out_dim, batch_norm=s.batch_norm))
        self.teacher = MultiCropNet(teacher_backbone, ProjectionHead.for_method(
            s.method, dim, s.hidden_dim, s.out_dim, with_predictor=False, batch_norm=s.batch_norm))
        self.teacher.load_state_dict(self.student.state_dict(), strict=False)   # the predictor has no twin
        self.teacher.requires_grad_(False)

    def make_momentum_schedule(self, epochs: int, steps_per_epoch: int) -> np.ndarray:
        s = self.cfg.ssl
        if s.method == "simclr":   # no momentum encoder: the exported copy follows the network (or its EMA)
            return np.full(epochs * steps_per_epoch, s.simclr_ema)
        return cosine_schedule(s.momentum, s.momentum_end, epochs, steps_per_epoch)

    def chance_loss(self) -> tuple[float, str]:
        """The main loss of a network whose outputs carry no information, for the loss plot."""
        s, batch = self.cfg.ssl, self.cfg.data.batch_size * self.n_processes
        if s.method == "byol":
            return 2.0, "2 (orthogonal)"
        if s.method == "mocov3":
            return 2 * s.temperature * math.log(batch), f"2 tau ln B = {2 * s.temperature * math.log(batch):.2f}"
        local = 2 * self.cfg.data.batch_size - 1
        return math.log(local), f"ln(2B - 1) = {math.log(local):.2f}"

    def crop_pairs(self) -> list[tuple[int, int]]:
        """(target crop, query crop) pairs: each global crop against every other crop (SimCLR: each pair once)."""
        g = self.cfg.crops.n_global
        if self.cfg.ssl.method == "simclr":
            return [(i, j) for i in range(g) for j in range(i + 1, self.n_crops)]
        return [(i, j) for i in range(g) for j in range(self.n_crops) if j != i]

    def criterion(self, query: torch.Tensor, target: torch.Tensor, weights=None) -> torch.Tensor:
        """The method's loss of ``query`` against its positive ``target`` (MoCo v3, BYOL; the disentanglement
        term of SimCLR too), each row's term times ``weights`` if given."""
        s = self.cfg.ssl
        if s.method == "byol":
            return byol_loss(query, target, weights)
        scale = 2 * s.temperature if s.method == "mocov3" else 1.0
        return scale * info_nce(query, target, s.temperature, weights)

    def losses(self, batch: dict, teacher_temp: float) -> dict[str, torch.Tensor]:
        s, crops, g = self.cfg.ssl, batch["image"], self.cfg.crops.n_global
        interp = batch.get("interp")
        b, m = crops[0].shape[0], len(interp[0]) if interp else 0   # m: interpolated images
        out = self.student([*crops[:g], *([interp[0]] if interp else []), *crops[g:]])
        split = g * b
        per_crop = (out if not interp else torch.cat([out[:split], out[split + m:]])).chunk(self.n_crops)
        pairs = self.crop_pairs()
        weights = self.pair_weights(crops[0], crops[1]) if self.pair_weights else None
        if s.method == "simclr":
            main = torch.stack([nt_xent(per_crop[i], per_crop[j], s.temperature, weights)
                                for i, j in pairs]).mean()
            if interp:
                with torch.no_grad():
                    sources = self.student(interp[1:])
        else:
            with torch.no_grad():
                targets = self.teacher([*crops[:g], *(interp[1:] if interp else [])])
            keys = targets[:split].chunk(g)
            main = torch.stack([self.criterion(per_crop[j], keys[i], weights) for i, j in pairs]).mean()
            sources = targets[split:]
        parts = {s.method: main}
        loss = main
        if interp:
            first, second = sources.chunk(2)
            dis = self.criterion(out[split:split + m], mixed_target(first, second, batch["alpha"]))
            loss = loss + self.cfg.disentangle.weight * dis / len(pairs)
            parts["disentangle"] = dis
        if weights is not None:
            parts["pair_weight_max"] = weights.max()
        if "generated" in batch:
            parts.update(view_logs(batch))
        return {"loss": loss, **parts}

    def step_logs(self, step: int, teacher_temp: float) -> dict[str, float]:
        """DINO's, without its teacher temperature (these methods have none)."""
        logs = super().step_logs(step, teacher_temp)
        del logs["train/teacher_temp"]
        return logs

    def on_train_epoch_end(self):
        pass   # the uniform-target warning is DINO's
