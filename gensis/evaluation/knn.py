"""Weighted kNN classifier on frozen features (Wu et al. 2018, as in DINO's ``eval_knn.py``).

Cosine similarity, the k nearest training samples vote with weight exp(sim / T).
"""

from __future__ import annotations

import numpy as np
import torch


def knn_predict_proba(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                      n_classes: int, k: int = 20, temperature: float = 0.07, batch: int = 1024) -> np.ndarray:
    """Class scores (N_test, n_classes), rows summing to 1."""
    train = torch.nn.functional.normalize(torch.as_tensor(train_features, dtype=torch.float32), dim=1)
    test = torch.nn.functional.normalize(torch.as_tensor(test_features, dtype=torch.float32), dim=1)
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    k = min(k, len(train))
    out = []
    for start in range(0, len(test), batch):
        sims = test[start: start + batch] @ train.T
        top, index = sims.topk(k, dim=1)
        weights = (top / temperature).exp()
        votes = torch.zeros(len(top), n_classes)
        votes.scatter_add_(1, labels[index], weights)
        out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out).numpy()
