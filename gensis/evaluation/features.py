"""Frozen-encoder features of a tile dataset (batched, no gradient, bf16 on GPU)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def extract_features(model: torch.nn.Module, dataset: Dataset, batch_size: int = 64, workers: int = 0,
                     device: str | torch.device = "cpu", progress: bool = False) -> np.ndarray:
    """(N, D) float32 CLS embeddings of ``dataset`` items (whose ``image`` is a normalised tensor)."""
    from tqdm import tqdm

    device = torch.device(device)
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    chunks = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                          enabled=False)
    for batch in tqdm(loader, desc="features", unit="batch", disable=not progress):
        with autocast:
            # cloned: the CLS embedding is a view of the batch's whole token tensor, which it would keep alive
            chunks.append(model(batch["image"].to(device, non_blocking=True)).float().cpu().clone())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)
