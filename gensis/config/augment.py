"""Config blocks of the DINO multi-crop and the hand-made augmentations (no heavy imports here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class CropConfig:
    n_global: int = 2
    n_local: int = 8
    global_size: int = 224
    local_size: int = 96
    global_scale: Tuple[float, float] = (0.4, 1.0)
    local_scale: Tuple[float, float] = (0.05, 0.4)


# DINO's Gaussian blur sigma range, in pixels of a 224 px global crop; scaled to the run's global crop size
BLUR_SIGMA = (0.1, 2.0)
BLUR_REFERENCE_SIZE = 224


def blur_sigma_range(global_size: int) -> tuple[float, float]:
    """DINO's sigma range (0.1-2 px at 224 px) scaled to ``global_size``: the same blur relative to the tile."""
    factor = global_size / BLUR_REFERENCE_SIZE
    return BLUR_SIGMA[0] * factor, BLUR_SIGMA[1] * factor


@dataclass(frozen=True)
class AugmentConfig:
    strength: float = 1.0              # scales the colour-jitter ranges and the grayscale / solarisation chances
    flip: bool = True
    rotate90: bool = True
    color_jitter: float = 0.8          # probability of brightness/contrast/saturation/hue jitter
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale: float = 0.2
    hed_jitter: float = 0.5            # probability of HED stain jitter
    hed_sigma: float = 0.05
    hed_bias: float = 0.01
    blur: bool = True
    solarize: float = 0.2
    on_gpu: bool = False               # batch the augmentations on the training device (gensis.data.batch_augment)
    source_size: int = 224             # with on_gpu: tiles are resized to this square before batching

    def __post_init__(self):
        if self.strength < 0:
            raise ValueError(f"augment.strength must be >= 0, got {self.strength}")

    def at_strength(self) -> "AugmentConfig":
        """This config with ``strength`` applied to the colour ranges and chances (and reset to 1)."""
        k = self.strength
        return dataclasses.replace(self, strength=1.0, brightness=self.brightness * k, contrast=self.contrast * k,
                                   saturation=self.saturation * k, hue=min(0.5, self.hue * k),
                                   grayscale=min(1.0, self.grayscale * k), solarize=min(1.0, self.solarize * k))
