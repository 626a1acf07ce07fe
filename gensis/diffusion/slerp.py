"""Spherical linear interpolation of embeddings (METHOD.md, offline generation).

    slerp(e1, e2, alpha) = sin(alpha theta) / sin(theta) * e1 + sin((1 - alpha) theta) / sin(theta) * e2,
    theta = arccos(<e1, e2>)   on L2-normalised e1, e2

``alpha`` is the weight of ``e1`` in the paper's convention e_int = slerp(e1, e2, alpha)
with L_dis mixing the teacher outputs as alpha * g(v1) + (1 - alpha) * g(v2): alpha = 1 gives
e1 and alpha = 0 gives e2. Nearly parallel pairs fall back to normalised linear interpolation.
"""

from __future__ import annotations

import torch


def slerp(e1: torch.Tensor, e2: torch.Tensor, alpha: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """Unit vectors on the great circle from ``e2`` (alpha = 0) to ``e1`` (alpha = 1); batched over rows.

    >>> a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    >>> slerp(a, b, 0.5)
    tensor([[0.7071, 0.7071]])
    """
    e1 = torch.nn.functional.normalize(e1.float(), dim=-1)
    e2 = torch.nn.functional.normalize(e2.float(), dim=-1)
    alpha = torch.as_tensor(alpha, dtype=e1.dtype, device=e1.device)
    if alpha.ndim == 0:
        alpha = alpha.expand(e1.shape[:-1])
    alpha = alpha.unsqueeze(-1)
    cos = (e1 * e2).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    near = sin.abs() < eps
    safe_sin = torch.where(near, torch.ones_like(sin), sin)
    w1 = torch.where(near, alpha, torch.sin(alpha * theta) / safe_sin)
    w2 = torch.where(near, 1 - alpha, torch.sin((1 - alpha) * theta) / safe_sin)
    return torch.nn.functional.normalize(w1 * e1 + w2 * e2, dim=-1)
