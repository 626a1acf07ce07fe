"""NT-Xent, SimCLR's loss (Chen et al. 2020, Eq. 1).

For N pairs (z1_i, z2_i), 2N projections z; with s_ab the cosine similarity of z_a and z_b,

    l(a, b) = - log( exp(s_ab / tau) / sum_{c != a} exp(s_ac / tau) ),

averaged over all 2N anchors a, b being a's pair. Gradients flow through both members of a
pair (no momentum encoder, no stop-gradient); the negatives are this process's batch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean NT-Xent of the pairs (``z1[i]``, ``z2[i]``), each N x D; both anchors of pair i times
    ``weights[i]``, if given."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    similarity = z @ z.T / temperature
    similarity = similarity.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    pair = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    per_anchor = F.cross_entropy(similarity, pair, reduction="none")
    return (per_anchor if weights is None else per_anchor * weights.repeat(2)).mean()
