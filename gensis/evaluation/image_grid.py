"""Grids of tiles as PNG: real tiles beside the views drawn from them, interpolation strips."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from gensis.atomic import atomic_path


def tile_grid(rows: Sequence[Sequence[np.ndarray]], cell: int = 96, gap: int = 4) -> Image.Image:
    """One row per sequence of uint8 (H, W, 3) tiles, each shown at ``cell`` px, white gaps between."""
    n_cols = max(len(row) for row in rows)
    width, height = n_cols * cell + (n_cols - 1) * gap, len(rows) * cell + (len(rows) - 1) * gap
    canvas = Image.new("RGB", (width, height), "white")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            image = Image.fromarray(np.asarray(tile, dtype=np.uint8)).resize((cell, cell), Image.Resampling.LANCZOS)
            canvas.paste(image, (c * (cell + gap), r * (cell + gap)))
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="png")
    return path
