"""Noise on the conditioning embedding (GenView, Li et al. 2024, Eq. 3): views that stray further.

The embedding is noised as an image is at DDPM timestep t of the training schedule:

    e' = sqrt(abar_t) e_s + sqrt(1 - abar_t) eps,    eps ~ N(0, I)

where e_s is e scaled to unit variance per dimension (L2-normalised, times sqrt(D)), as
diffusion data are, so that a timestep means the same signal-to-noise ratio as in the image
model. t = 0 gives e back. GenView uses t up to 400 of 1,000, chosen per image: more noise
where the foreground fills the image, little where it is small
(:func:`adaptive_levels` from each tile's tissue share). The conditioner L2-normalises e'.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from gensis.errors import GensisError

CONDITION_SEED_OFFSET = 2**31  # a view's condition noise is seeded with its image seed plus this


def noise_condition(embeddings: torch.Tensor, levels: Sequence[int], alphas_cumprod: torch.Tensor,
                    seeds: Sequence[int]) -> torch.Tensor:
    """``embeddings`` (B, D) noised at timestep ``levels[i]`` (0: unchanged) with noise seeded by ``seeds[i]``."""
    if max(levels, default=0) > len(alphas_cumprod):
        raise GensisError(f"noise level {max(levels)}: the model was trained with {len(alphas_cumprod)} timesteps; "
                          f"give 0 to {len(alphas_cumprod)}")
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1) * embeddings.shape[-1] ** 0.5
    out = []
    for row, level, seed in zip(e, levels, seeds):
        if level <= 0:
            out.append(row)
            continue
        abar = float(alphas_cumprod[int(level) - 1])
        eps = torch.randn(row.shape, generator=torch.Generator().manual_seed(int(seed)))
        out.append(abar ** 0.5 * row + (1 - abar) ** 0.5 * eps)
    return torch.stack(out).to(embeddings.dtype)


def tissue_share(tile: np.ndarray, min_saturation: float = 0.07) -> float:
    """Share of a uint8 RGB tile's pixels that are stained (HSV saturation above ``min_saturation``)."""
    rgb = tile[..., :3].astype(np.float32)
    high, low = rgb.max(-1), rgb.min(-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    return float((saturation > min_saturation).mean())


def adaptive_levels(level: int, shares: np.ndarray) -> np.ndarray:
    """Per-tile timesteps: ``level`` scaled by each tile's foreground share (0 for an empty tile)."""
    return np.round(level * np.clip(shares, 0.0, 1.0)).astype(np.int64)


def tile_levels(level: int, adaptive: bool, n_tiles: int, load: Callable[[int], np.ndarray]) -> np.ndarray:
    """The condition-noise timestep of each of ``n_tiles`` tiles: ``level``, or with ``adaptive`` scaled by the
    tissue share of the tile ``load(i)`` returns (tiles are loaded only then)."""
    if not adaptive:
        return np.full(n_tiles, level, np.int64)
    return adaptive_levels(level, np.array([tissue_share(load(i)) for i in range(n_tiles)]))


def noise_views(embeddings: torch.Tensor, levels: Sequence[int], alphas_cumprod: torch.Tensor,
                image_seeds: Sequence[int]) -> torch.Tensor:
    """The conditions of generated views: ``embeddings`` noised at ``levels``, the noise of each seeded from
    its image's seed (plus :data:`CONDITION_SEED_OFFSET`), so a view is the same whoever draws it."""
    return noise_condition(embeddings, levels, alphas_cumprod, [int(s) + CONDITION_SEED_OFFSET for s in image_seeds])


def training_condition(embeddings: torch.Tensor, max_level: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Stage 2 trained on noised conditions: each row at a random timestep in [0, ``max_level``] (0: unchanged)."""
    if max_level <= 0:
        return embeddings
    levels = torch.randint(0, max_level + 1, (len(embeddings),)).tolist()
    seeds = torch.randint(0, 2**31 - 1, (len(embeddings),)).tolist()
    return noise_condition(embeddings.cpu(), levels, alphas_cumprod.cpu(), seeds).to(embeddings.device)
