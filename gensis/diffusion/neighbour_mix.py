"""Views drawn between a tile and a similar tile: mixing in the conditioning space (GCL, METHOD.md).

Each generated view of tile i is drawn from

    e' = slerp(e_i, e_j, 1 - w),    j one of the k tiles nearest to i (cosine), w ~ U[0, w_max]

so the view keeps at least 1 - w_max of its tile and takes the rest from a neighbour, which
is most often a tile of the same kind: a view of the tile's class that is not the tile
itself, where condition noise (condition_noise.py) strays in every direction. The neighbour
and w of a view are drawn from its image's seed (plus :data:`MIX_SEED_OFFSET`), so a view is
the same whoever draws it. w_max = 0 gives e_i back.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from gensis.diffusion.slerp import slerp

MIX_SEED_OFFSET = 2**32  # a view's neighbour and weight are drawn from its image seed plus this


def nearest_neighbours(embeddings: torch.Tensor, k: int, chunk: int | None = None) -> np.ndarray:
    """(N, min(k, N - 1)) indices of each row's nearest other rows by cosine similarity, nearest first,
    computed on ``embeddings``' device ``chunk`` rows at a time (by default about 2**26 similarities)."""
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    k = min(k, len(e) - 1)
    chunk = chunk or max(1, 2**26 // len(e))
    out = []
    for start in range(0, len(e), chunk):
        similarity = e[start:start + chunk] @ e.T
        rows = torch.arange(start, min(start + chunk, len(e)), device=e.device)
        similarity[rows - start, rows] = -float("inf")   # a tile is not its own neighbour
        out.append(similarity.topk(k, dim=1).indices.cpu())
    return torch.cat(out).numpy().astype(np.int64)


def mix_views(embeddings: torch.Tensor, tiles: Sequence[int], neighbours: np.ndarray, max_weight: float,
              image_seeds: Sequence[int]) -> torch.Tensor:
    """The conditions of views of ``tiles``: each its tile's embedding slerped towards one of its
    ``neighbours`` by a weight in [0, ``max_weight``], both drawn from the view's image seed."""
    rows = []
    for tile, seed in zip(tiles, image_seeds):
        rng = np.random.default_rng(int(seed) + MIX_SEED_OFFSET)
        neighbour = int(neighbours[tile][rng.integers(len(neighbours[tile]))])
        weight = float(rng.uniform(0.0, max_weight))
        rows.append(slerp(embeddings[tile][None], embeddings[neighbour][None], 1.0 - weight)[0])
    return torch.stack(rows).to(embeddings.dtype)
