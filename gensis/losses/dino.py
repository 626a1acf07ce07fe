"""The DINO loss (Caron et al. 2021, Eq. 1 and Algorithm 1), with centring.

    P_t = softmax((g_t(x) - c) / tau_t)        (teacher, global crops only, no gradient)
    P_s = softmax(g_s(x') / tau_s)             (student, every crop)
    L   = mean over pairs (global t, crop s != t) of  - sum_k P_t,k log P_s,k
    c  <- m c + (1 - m) mean_batch g_t(x)      (after each step, across all processes)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F


class DINOLoss(nn.Module):
    """Cross-entropy between sharpened, centred teacher outputs and student outputs.

    Args:
        out_dim: head output size K.
        student_temp: tau_s (0.1 in the paper).
        center_momentum: m (0.9).

    The centre is a buffer, so it is saved in checkpoints and restored on resume.

    >>> loss = DINOLoss(out_dim=8)
    >>> teacher, student = torch.randn(2 * 4, 8), torch.randn(6 * 4, 8)
    >>> value = loss(student, teacher, n_crops=6, teacher_temp=0.04)
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_targets(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """softmax((g_t - c) / tau_t), without gradient."""
        return F.softmax((teacher_out.detach().float() - self.center) / teacher_temp, dim=-1)

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, n_crops: int,
                teacher_temp: float, update_center: bool = True,
                sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        """``student_out``: (n_crops * B, K) crop-major; ``teacher_out``: (n_global * B, K), global crops first;
        ``sample_weights``: (B,) weights of each sample's terms in the batch mean (GenView's; mean 1)."""
        n_global = teacher_out.shape[0] // (student_out.shape[0] // n_crops)
        student = (student_out.float() / self.student_temp).chunk(n_crops)
        targets = self.teacher_targets(teacher_out, teacher_temp).chunk(n_global)
        total, terms = 0.0, 0
        for t_index, target in enumerate(targets):
            for s_index, logits in enumerate(student):
                if s_index == t_index:
                    continue  # never the same view
                per_sample = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1)
                total = total + (per_sample if sample_weights is None else per_sample * sample_weights).mean()
                terms += 1
        if update_center:
            self.update_center(teacher_out)
        return total / terms

    @staticmethod
    def n_pairs(n_global: int, n_crops: int) -> int:
        """How many (teacher crop, student crop) terms the loss averages: each global crop against every other crop."""
        return n_global * (n_crops - 1)

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        batch_sum = teacher_out.detach().float().sum(dim=0, keepdim=True)
        count = torch.tensor([teacher_out.shape[0]], device=teacher_out.device, dtype=torch.float32)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count * (1 - self.center_momentum))
