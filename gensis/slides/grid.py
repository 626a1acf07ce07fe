"""The tile grid of a slide at a physical resolution, and each tile's tissue fraction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile_px`` pixels at ``target_mpp``, placed on a level-0 grid."""

    coords: np.ndarray          # int64 (N, 2): level-0 x, y of each tile's top-left corner
    patch_size_level0: int      # tile side in level-0 pixels
    stride_level0: float
    tile_px: int
    target_mpp: float
    slide_mpp: float


def make_grid(width: int, height: int, slide_mpp: float, target_mpp: float, tile_px: int,
              overlap_px: int = 0) -> TileGrid:
    """Every tile fully inside a (width, height) level-0 image, row by row."""
    scale = target_mpp / slide_mpp
    size0 = tile_px * scale
    stride0 = (tile_px - overlap_px) * scale
    nx = int(np.floor((width - size0) / stride0)) + 1 if width >= size0 else 0
    ny = int(np.floor((height - size0) / stride0)) + 1 if height >= size0 else 0
    xs = np.floor(np.arange(nx) * stride0).astype(np.int64)
    ys = np.floor(np.arange(ny) * stride0).astype(np.int64)
    gx, gy = np.meshgrid(xs, ys)
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
    return TileGrid(coords=coords, patch_size_level0=int(round(size0)), stride_level0=float(stride0),
                    tile_px=tile_px, target_mpp=target_mpp, slide_mpp=slide_mpp)


def tissue_fractions(mask: np.ndarray, mask_downsample: float, coords: np.ndarray, size0: int) -> np.ndarray:
    """Mean of ``mask`` over each tile's box (summed-area table, so O(1) per tile).

    ``mask_downsample`` is level-0 pixels per mask pixel.
    """
    if len(coords) == 0:
        return np.zeros(0, np.float32)
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.float64), axis=0), axis=1)
    h, w = mask.shape

    def to_mask(v, limit):
        return np.clip(np.round(v / mask_downsample).astype(np.int64), 0, limit)

    x0, y0 = to_mask(coords[:, 0], w), to_mask(coords[:, 1], h)
    x1, y1 = to_mask(coords[:, 0] + size0, w), to_mask(coords[:, 1] + size0, h)
    x1, y1 = np.maximum(x1, np.minimum(x0 + 1, w)), np.maximum(y1, np.minimum(y0 + 1, h))
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return (total / area).astype(np.float32)


def grid_columns(coords: np.ndarray, stride0: float) -> np.ndarray:
    """Each tile's column index on the grid."""
    return np.round(coords[:, 0] / stride0).astype(np.int64)


def strips(coords: np.ndarray, stride0: float, max_tiles: int = 16) -> list[np.ndarray]:
    """Group tile indices into horizontal runs of neighbours (same row, consecutive columns).

    Runs never cross a column band of ``max_tiles`` grid columns, so runs in consecutive
    rows of a band cover the same columns. Reading a run as one region is much cheaper
    than reading its tiles one by one. Runs come band by band, top to bottom.
    """
    if len(coords) == 0:
        return []
    columns = grid_columns(coords, stride0)
    bands = columns // max_tiles
    order = np.lexsort((coords[:, 0], coords[:, 1], bands))
    runs, current = [], [order[0]]
    for prev, idx in zip(order[:-1], order[1:]):
        same_row = coords[idx, 1] == coords[prev, 1] and bands[idx] == bands[prev]
        adjacent = columns[idx] - columns[prev] == 1
        if same_row and adjacent:
            current.append(idx)
        else:
            runs.append(np.array(current))
            current = [idx]
    runs.append(np.array(current))
    return runs
