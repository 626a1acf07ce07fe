"""Projector and predictor MLPs of MoCo v3, BYOL and SimCLR.

- MoCo v3 (Chen et al. 2021, Sec. 4): projector of 3 layers and predictor of 2, batch norm
  after every hidden layer and (without affine) after the projector's output.
- BYOL (Grill et al. 2020, Sec. 3.3): projector and predictor of 2 layers, Linear-BN-ReLU-Linear.
- SimCLR (Chen et al. 2020, Sec. 2.1): a 2-layer projector, no predictor.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

LAYERS = {"mocov3": (3, 2), "byol": (2, 2), "simclr": (2, 0)}   # (projector, predictor) layers


def mlp(in_dim: int, hidden_dim: int, out_dim: int, n_layers: int, last_batch_norm: bool = False) -> nn.Sequential:
    """``n_layers`` linear layers with batch norm and ReLU between them (and, optionally, an affine-free batch
    norm on the output)."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(n_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """Projector, then (the online network of MoCo v3 and BYOL) a predictor.

    >>> head = ProjectionHead.for_method("mocov3", 192, hidden_dim=512, out_dim=128)
    >>> head(torch.randn(4, 192)).shape
    torch.Size([4, 128])
    """

    def __init__(self, projector: nn.Module, predictor: Optional[nn.Module] = None):
        super().__init__()
        self.projector = projector
        self.predictor = predictor

    @classmethod
    def for_method(cls, method: str, in_dim: int, hidden_dim: int, out_dim: int,
                   with_predictor: bool = True) -> "ProjectionHead":
        """The head of ``method``'s online network (``with_predictor``) or of its momentum / target network."""
        projector_layers, predictor_layers = LAYERS[method]
        projector = mlp(in_dim, hidden_dim, out_dim, projector_layers, last_batch_norm=method == "mocov3")
        predictor = (mlp(out_dim, hidden_dim, out_dim, predictor_layers)
                     if with_predictor and predictor_layers else None)
        return cls(projector, predictor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projector(x)
        return self.predictor(x) if self.predictor is not None else x
