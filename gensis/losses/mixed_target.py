"""The disentanglement target of MoCo v3, BYOL and SimCLR (METHOD.md, "Disentanglement for other methods").

The interpolated image's target is the alpha-mix of its two sources' targets, made before
the method's own normalisation, with no gradient through it (alpha weighs source 1, as in
slerp(e1, e2, alpha)):

    k_mix = normalise(alpha * k1 + (1 - alpha) * k2)

k the momentum encoder's keys (MoCo v3), the target network's projections z' (BYOL) or the
stop-gradient projections (SimCLR). The method's own loss then takes k_mix as the
interpolated image's positive: InfoNCE against the batch's other mixed keys (MoCo v3,
SimCLR) or 2 - 2 cos (BYOL).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


@torch.no_grad()
def mixed_target(first: torch.Tensor, second: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """normalise(alpha * first + (1 - alpha) * second), row by row; ``alpha``: (B,)."""
    alpha = alpha.float().reshape(-1, 1)
    return F.normalize(alpha * first.float() + (1 - alpha) * second.float(), dim=-1)
