"""Configs of ``gensis embed`` and ``gensis eval``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from gensis.config.tile import _help
from gensis.config.train import BackboneConfig, DataConfig, TrainerConfig


@dataclass(frozen=True)
class EmbedConfig:
    encoder: str = _help("encoder run dir (encoder.safetensors + encoder.json)", MISSING)
    data: DataConfig = _help("tiles to embed", factory=DataConfig)
    out: str = _help("embeddings.h5 to write", MISSING)
    trainer: TrainerConfig = _help("device and precision", factory=TrainerConfig)
    progress: bool = _help("show a progress bar", True)


@dataclass(frozen=True)
class EvalConfig:
    encoder: str = _help("encoder run dir, or 'random' (the backbone.* architecture, untrained: the floor)", MISSING)
    data: DataConfig = _help("labeled tiles (data.path split by group, or data.train + data.test)",
                             factory=DataConfig)
    out: str = _help("folder for metrics.json, report.md and plots", MISSING)
    backbone: BackboneConfig = _help("architecture for encoder=random", factory=BackboneConfig)
    test_fraction: float = _help("share of groups (or tiles) held out when splitting data.path", 0.3)
    knn_k: int = _help("neighbours in the kNN vote", 20)
    knn_temperature: float = _help("temperature of the kNN vote weights", 0.07)
    seed: int = _help("split seed", 0)
    grayscale: bool = _help("probe the tiles in grayscale (luminance in all three channels): what the encoder "
                            "tells apart without colour", False)
    trainer: TrainerConfig = _help("device and precision", factory=TrainerConfig)
    progress: bool = _help("show progress bars", True)

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.knn_k < 1:
            raise ValueError(f"knn_k must be >= 1, got {self.knn_k}")


@dataclass(frozen=True)
class SlideFeaturesConfig:
    encoder: str = _help("encoder run dir (encoder.safetensors + encoder.json)", MISSING)
    tiles: str = _help("a gensis tile output dir (tiles.h5, tile images, or coords read from the slides) or a "
                       "tiles.h5", MISSING)
    out: str = _help("folder of <slide>.h5 feature files (features, coords: CLAM / TRIDENT layout)", MISSING)
    data: DataConfig = _help("batch size and loader workers (data.path is not used: give tiles=)",
                             factory=DataConfig)
    trainer: TrainerConfig = _help("devices (several processes split the slides) and precision",
                                   factory=TrainerConfig)
    shard: Optional[str] = _help("I/N: only the I-th of N shares of the slides, into out/shards/I-of-N (slurm: "
                                 "from SLURM_ARRAY_TASK_ID / _COUNT)", None)
    merge: bool = _help("join out/shards/* into out (after every shard=I/N job)", False)
    progress: bool = _help("show a progress bar", True)
