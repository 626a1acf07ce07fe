"""Is DINO learning? Three readings of the teacher's targets (logged per epoch by stages 1 and 3).

With P_t = softmax((g_t - c) / tau_t) the teacher's target and P_s = softmax(g_s / tau_s)
the student's prediction on another view of the same tile:

    teacher entropy     H(P_t) = - sum_k P_t,k log P_t,k        (ln K: uniform targets, nothing to learn)
    teacher-student KL  KL(P_t || P_s) = sum_k P_t,k (log P_t,k - log P_s,k)
                        (the DINO loss is H(P_t) + KL, so a loss at ln K with H = ln K means KL = 0)
    view agreement      Pearson correlation, across the K outputs, of the centred teacher logits
                        g_t(v1) - c and g_t(v2) - c of two views of one tile, averaged over tiles
                        (1: the views give the same target; 0: unrelated targets)
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def teacher_entropy(targets: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of ``targets`` (probabilities, B x K)."""
    return -(targets * torch.log(targets.clamp_min(1e-30))).sum(dim=-1).mean()


def teacher_student_kl(targets: torch.Tensor, student_logits: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Mean KL(P_t || P_s) over rows; ``student_logits`` before the temperature."""
    log_t = torch.log(targets.clamp_min(1e-30))
    log_s = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return (targets * (log_t - log_s)).sum(dim=-1).mean()


def view_agreement(centred_a: torch.Tensor, centred_b: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the Pearson correlation between two B x K tensors of centred logits."""
    a = centred_a.float() - centred_a.float().mean(dim=-1, keepdim=True)
    b = centred_b.float() - centred_b.float().mean(dim=-1, keepdim=True)
    return F.cosine_similarity(a, b, dim=-1, eps=1e-12).mean()
