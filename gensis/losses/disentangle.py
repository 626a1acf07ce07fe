"""The disentanglement loss of Gen-SIS (Belagali et al. 2024; METHOD.md stage 4).

The student sees a view of an image drawn from slerp(e1, e2, alpha); its target is the
teacher's outputs on views v1, v2 of the two source tiles, mixed by alpha BEFORE
centring and sharpening, with the DINO loss's own centre and temperatures:

    t     = softmax((alpha * g_t(v1) + (1 - alpha) * g_t(v2) - c) / tau_t)   (no gradient)
    s     = log_softmax(g_s(v_int) / tau_s)
    L_dis = - mean over batch of sum_k t_k * s_k

The centre is read, never updated here: only the DINO loss's teacher outputs move it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DisentanglementLoss(nn.Module):
    """Cross-entropy between the alpha-mixed teacher target and the student on the interpolated view.

    Args:
        student_temp: tau_s, the DINO loss's (0.1 in the paper).

    The centre ``c`` is passed in at each call: the DINO loss's buffer (``DINOLoss.center``).

    >>> loss = DisentanglementLoss(student_temp=0.1)
    >>> s, t1, t2 = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    >>> value = loss(s, t1, t2, alpha=torch.full((4,), 0.3), center=torch.zeros(1, 8), teacher_temp=0.04)
    """

    def __init__(self, student_temp: float = 0.1):
        super().__init__()
        self.student_temp = student_temp

    def forward(self, student_interp: torch.Tensor, teacher_first: torch.Tensor, teacher_second: torch.Tensor,
                alpha: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """``student_interp``, ``teacher_first``, ``teacher_second``: (B, K) head outputs; ``alpha``: (B,)."""
        alpha = alpha.float().reshape(-1, 1)
        with torch.no_grad():
            mixed = alpha * teacher_first.float() + (1 - alpha) * teacher_second.float()
            target = F.softmax((mixed - center) / teacher_temp, dim=-1)
        log_student = F.log_softmax(student_interp.float() / self.student_temp, dim=-1)
        return torch.sum(-target * log_student, dim=-1).mean()
