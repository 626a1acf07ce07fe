"""Projector and predictor MLPs of MoCo v3, BYOL and SimCLR.

- MoCo v3 (Chen et al. 2021, Sec. 4): projector of 3 layers and predictor of 2, batch norm
  after every hidden layer and (without affine) after the projector's output.
- BYOL (Grill et al. 2020, Sec. 3.3): projector and predictor of 2 layers, Linear-BN-ReLU-Linear.
- SimCLR (Chen et al. 2020, Sec. 2.1): a 2-layer projector, no predictor.

Batch norm makes each sample's output depend on the rest of its batch; ``batch_norm=False`` takes every batch
norm out (the hidden layers get a bias instead), so that each output depends on its own input only.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

LAYERS = {"mocov3": (3, 2), "byol": (2, 2), "simclr": (2, 0)}   # (projector, predictor) layers


def mlp(in_dim: int, hidden_dim: int, out_dim: int, n_layers: int, last_batch_norm: bool = False,
        batch_norm: bool = True) -> nn.Sequential:
    """``n_layers`` linear layers with batch norm (unless ``batch_norm`` is false) and ReLU between them (and,
    optionally, an affine-free batch norm on the output)."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(n_layers - 1):
        norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
        layers += [nn.Linear(dim, hidden_dim, bias=not batch_norm), *norm, nn.ReLU(inplace=True)]
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
                   with_predictor: bool = True, batch_norm: bool = True) -> "ProjectionHead":
        """The head of ``method``'s online network (``with_predictor``) or of its momentum / target network;
        ``batch_norm=False``: without any batch norm."""
        projector_layers, predictor_layers = LAYERS[method]
        projector = mlp(in_dim, hidden_dim, out_dim, projector_layers,
                        last_batch_norm=batch_norm and method == "mocov3", batch_norm=batch_norm)
        predictor = (mlp(out_dim, hidden_dim, out_dim, predictor_layers, batch_norm=batch_norm)
                     if with_predictor and predictor_layers else None)
        return cls(projector, predictor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projector(x)
        return self.predictor(x) if self.predictor is not None else x
