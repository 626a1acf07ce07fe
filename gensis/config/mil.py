"""Config of ``gensis mil`` (slide-level attention MIL on ``gensis features``)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from gensis.config.tile import _help
from gensis.config.train import TrainerConfig


@dataclass(frozen=True)
class MILConfig:
    features: str = _help("folder of <slide>.h5 feature files (gensis features)", MISSING)
    labels: str = _help("slides CSV: slide, label and optionally patient (or group) and fold", MISSING)
    out: str = _help("folder for metrics.json, report.md, attention.h5 and attention heatmaps", MISSING)
    folds: int = _help("k of the k-fold cross-validation (split by patient when given; a fold column wins)", 5)
    epochs: int = _help("training epochs per fold (one slide per step)", 40)
    lr: float = _help("Adam learning rate (on standardised tile features)", 1e-3)
    weight_decay: float = _help("Adam weight decay", 1e-4)
    hidden_dim: int = _help("tile features are projected to this width", 128)
    attention_dim: int = _help("width of the gated attention", 64)
    dropout: float = _help("dropout after the projection", 0.25)
    ordinal: bool = _help("labels are ordered grades (PANDA-style): also report quadratic kappa", False)
    heatmaps: int = _help("attention heatmaps drawn over the thumbnails of this many held-out slides", 4)
    seed: int = _help("seed of the folds and the training", 0)
    trainer: TrainerConfig = _help("device", factory=TrainerConfig)
    progress: bool = _help("show progress", True)

    def __post_init__(self):
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if self.epochs < 1 or self.lr <= 0:
            raise ValueError(f"epochs must be >= 1 and lr > 0, got {self.epochs} and {self.lr}")
