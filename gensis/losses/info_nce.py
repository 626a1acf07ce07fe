"""InfoNCE of queries against keys (van den Oord et al. 2018; the loss of MoCo v3, Chen et al. 2021, Alg. 1).

    L = - 1/N sum_i log( exp(q_i . k_i / tau) / sum_j exp(q_i . k_j / tau) )

q and k L2-normalised, k without gradient; key i is query i's positive, every other key of
the batch (of every process, under DDP) a negative. MoCo v3 scales the loss by 2 tau.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn import functional as F


def gather_keys(keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's keys (no gradient) and the offset of this process's first key among them."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys, 0
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts), dist.get_rank() * keys.shape[0]


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float,
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean InfoNCE of ``query`` (N x D) against ``key`` (N x D, row i is query i's positive); each row's
    term times ``weights`` (N,), if given."""
    q = F.normalize(query.float(), dim=-1)
    keys, offset = gather_keys(F.normalize(key.detach().float(), dim=-1))
    logits = q @ keys.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    per_row = F.cross_entropy(logits, labels, reduction="none")
    return (per_row if weights is None else per_row * weights).mean()
