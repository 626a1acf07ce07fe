"""BYOL's regression loss (Grill et al. 2020, Eq. 2).

    L = 2 - 2 * <p, z'> / (||p|| ||z'||)

p the online network's prediction, z' the target network's projection without gradient;
the mean over the batch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 2 - 2 cos(prediction, target) over the rows; no gradient reaches ``target``."""
    return (2 - 2 * F.cosine_similarity(prediction.float(), target.detach().float(), dim=-1)).mean()
