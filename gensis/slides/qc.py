"""Quality-control picture of a tiling: thumbnail, tissue contour and the kept tile grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gensis.atomic import atomic_path


def write_qc_image(path: Path, thumbnail: np.ndarray, mask: np.ndarray, coords: np.ndarray, size0: int,
                   downsample: float, title: str = "") -> None:
    """Draw the tissue contour (green) and kept tiles (blue boxes) over the thumbnail; atomic PNG."""
    from PIL import Image, ImageDraw
    from skimage.segmentation import find_boundaries

    image = thumbnail.copy()
    if mask.shape == image.shape[:2] and mask.any():
        edge = find_boundaries(mask, mode="outer")
        image[edge] = (0, 170, 0)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for x, y in coords:
        box = (x / downsample, y / downsample, (x + size0) / downsample, (y + size0) / downsample)
        draw.rectangle(box, outline=(30, 60, 220))
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
