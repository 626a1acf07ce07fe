"""GenView's quality-driven weights of positive pairs (Li et al. 2024, "GenView", Sec. 3.3).

A frozen encoder's patch tokens of each image are split into foreground and background by
the sign of the first principal component of that image's tokens (the sign chosen so that
the foreground is the minority of the tokens, as the object of interest is), and pooled into one foreground and one background feature per image. With
s_fg and s_bg the cosine similarities of the two images' foreground and background features,

    w_i = N * softmax_i( gamma * (s_fg,i - s_bg,i) )

so that a pair that agrees on its foreground (and not merely on its background) weighs more;
the weights sum to N, so the loss keeps its scale.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


@torch.no_grad()
def foreground_mask(tokens: torch.Tensor) -> torch.Tensor:
    """Boolean (B, P) foreground of each image's patch tokens (B x P x D): the side of the first principal
    component of that image's tokens that holds the minority of them."""
    centred = tokens.float() - tokens.float().mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    positive = torch.einsum("bpd,bd->bp", centred, vh[:, 0]) > 0
    return positive ^ (positive.float().mean(dim=1, keepdim=True) > 0.5)


def _pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the masked tokens per image; all tokens where the mask is empty."""
    weights = mask.float()
    empty = weights.sum(dim=1, keepdim=True) == 0
    weights = torch.where(empty, torch.ones_like(weights), weights)
    return (tokens.float() * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True)


@torch.no_grad()
def genview_weights(tokens_a: torch.Tensor, tokens_b: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """(B,) weights of the B positive pairs (image a_i, image b_i) from their patch tokens (B x P x D)."""
    fg_a, fg_b = foreground_mask(tokens_a), foreground_mask(tokens_b)
    s_fg = F.cosine_similarity(_pool(tokens_a, fg_a), _pool(tokens_b, fg_b), dim=-1)
    s_bg = F.cosine_similarity(_pool(tokens_a, ~fg_a), _pool(tokens_b, ~fg_b), dim=-1)
    return tokens_a.shape[0] * torch.softmax(gamma * (s_fg - s_bg), dim=0)
