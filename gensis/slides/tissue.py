"""Tissue detection on a low-resolution RGB image (scikit-image).

Stained tissue is saturated, glass is not: threshold the HSV saturation with Otsu,
clamped to [min_saturation, max_saturation] so that an all-glass or all-tissue image
is not split in two; drop pen ink (green/blue hues, saturated dark red) and black
debris; then close, remove small objects and fill small holes.
"""

from __future__ import annotations

import numpy as np
from skimage import color, filters, morphology


def tissue_mask(rgb: np.ndarray, min_saturation: float = 0.07, max_saturation: float = 0.1,
                min_object_px: int = 16, max_hole_px: int = 16, remove_pen: bool = True) -> np.ndarray:
    """Boolean tissue mask of an RGB uint8 image (H, W, 3)."""
    hsv = color.rgb2hsv(rgb[..., :3])
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sat = filters.gaussian(sat, sigma=1.0, preserve_range=True)
    if np.ptp(sat) > 1e-6:
        threshold = float(filters.threshold_otsu(sat))
    else:
        threshold = max_saturation
    threshold = min(max(threshold, min_saturation), max_saturation)
    mask = (sat > threshold) & (val > 0.15)
    if remove_pen:
        pen = pen_ink(hue, sat, val)
        pen = morphology.remove_small_objects(pen, max_size=pen.size // 100)  # strokes, not stained specks
        if pen.any():  # the blurred rim of a pen stroke is pink too: grow the ink before removing it
            halo = max(1, min(mask.shape) // 16)
            pen = morphology.dilation(pen, morphology.disk(halo)).astype(bool)
        mask &= ~pen
    radius = 1 if min(mask.shape) < 64 else 2
    mask = morphology.closing(mask, morphology.disk(radius)).astype(bool)
    if min_object_px > 0:
        mask = morphology.remove_small_objects(mask, max_size=min_object_px)
    if max_hole_px > 0:
        mask = morphology.remove_small_holes(mask, max_size=max_hole_px)
    return mask


def pen_ink(hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Pixels of green, blue or saturated red marker ink (hues H&E never takes)."""
    green_blue = (hue > 0.2) & (hue < 0.62) & (sat > 0.25)
    pure_red = ((hue < 0.03) | (hue > 0.93)) & (sat > 0.5)
    dark_red = ((hue < 0.03) | (hue > 0.85)) & (sat > 0.4) & (val < 0.5)
    return green_blue | pure_red | dark_red

