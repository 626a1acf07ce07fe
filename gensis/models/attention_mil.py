"""Gated attention MIL (Ilse, Tomczak and Welling 2018, "Attention-based Deep Multiple Instance Learning",
Eq. 9): a slide is the bag of its tiles' features h_1..h_N;

    a_n = softmax_n( w^T (tanh(V h_n) * sigmoid(U h_n)) ),    z = sum_n a_n h_n,    y = classifier(z)

with h_n first projected by a linear layer + ReLU (+ dropout), as CLAM does.
"""

from __future__ import annotations

import torch
from torch import nn


class GatedAttentionMIL(nn.Module):
    """Bag of tile features (N x D) -> class logits (C,) and attention weights (N,).

    >>> model = GatedAttentionMIL(in_dim=32, n_classes=2)
    >>> logits, attention = model(torch.randn(10, 32))
    >>> logits.shape, attention.shape
    (torch.Size([2]), torch.Size([10]))
    """

    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int = 128, attention_dim: int = 64,
                 dropout: float = 0.25):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attention_v = nn.Linear(hidden_dim, attention_dim)
        self.attention_u = nn.Linear(hidden_dim, attention_dim)
        self.attention_w = nn.Linear(attention_dim, 1)
        self.classifier = nn.Linear(hidden_dim, n_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.project(features)
        scores = self.attention_w(torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))).squeeze(-1)
        attention = torch.softmax(scores, dim=0)
        return self.classifier(attention @ h), attention
