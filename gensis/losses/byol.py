"""BYOL's regression loss (Grill et al. 2020, Eq. 2).

    L = 2 - 2 * <p, z'> / (||p|| ||z'||)

p the online network's prediction, z' the target network's projection without gradient;
the mean over the batch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def byol_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of 2 - 2 cos(prediction, target) over the rows (each times ``weights``, if given); no gradient
    reaches ``target``."""
    per_row = 2 - 2 * F.cosine_similarity(prediction.float(), target.detach().float(), dim=-1)
    return (per_row if weights is None else per_row * weights).mean()
