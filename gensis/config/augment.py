"""Config blocks of the DINO multi-crop and the hand-made augmentations (no heavy imports here)."""

from __future__ import annotations

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


@dataclass(frozen=True)
class AugmentConfig:
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
