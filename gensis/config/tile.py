"""Config of ``gensis tile``: validated, frozen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

TILE_FORMATS = ("h5", "jpg", "png", "coords")


def _help(text: str, default=MISSING, factory=None):
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class TileParams:
    mpp: float = _help("target resolution in microns per pixel (0.5 is about 20x)", 0.5)
    size: int = _help("tile side in pixels at the target resolution", 224)
    overlap: int = _help("overlap between neighbouring tiles, in target pixels", 0)
    min_tissue: float = _help("keep tiles whose tissue fraction is at least this (0..1)", 0.5)
    format: str = _help("h5 (one tiles.h5 store) | jpg | png (tiles/<slide>/<x>_<y>.ext) | coords (coordinates only)", "h5")
    jpeg_quality: int = _help("JPEG quality for format=jpg", 90)
    mask_mpp: float = _help("resolution of the tissue mask in microns per pixel", 8.0)
    min_saturation: float = _help("tissue needs at least this HSV saturation (0..1), whatever Otsu says", 0.07)

    def __post_init__(self):
        if self.mpp <= 0:
            raise ValueError(f"tile.mpp must be > 0, got {self.mpp}")
        if self.size < 8:
            raise ValueError(f"tile.size must be at least 8 pixels, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"tile.overlap must be in [0, tile.size), got {self.overlap}")
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"tile.min_tissue must be in [0, 1], got {self.min_tissue}")
        if self.format not in TILE_FORMATS:
            raise ValueError(f"tile.format must be one of {'|'.join(TILE_FORMATS)}, got {self.format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"tile.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.mask_mpp <= 0:
            raise ValueError(f"tile.mask_mpp must be > 0, got {self.mask_mpp}")


@dataclass(frozen=True)
class TileConfig:
    slides: str = _help("a slide file, a folder, a glob, or a CSV with columns path[,mpp]")
    out: str = _help("output folder (coords/, tiles.h5 or tiles/, qc/, manifest.csv)")
    tile: TileParams = _help("tiling parameters", factory=TileParams)
    workers: int = _help("parallel worker processes (0 = in this process)", 2)
    mpp_override: Optional[float] = _help("use this mpp for every slide instead of the slide's own", None)
    skip_errors: bool = _help("exit 0 even when some slides failed (failures stay in manifest.csv)", False)
    shard: Optional[str] = _help("I/N: tile only the I-th of N shares of the slides into out/shards/I-of-N "
                                 "(slurm: from SLURM_ARRAY_TASK_ID / _COUNT)", None)
    merge: bool = _help("join the shards' outputs in out/shards/ into out (after every shard=I/N job)", False)
    progress: bool = _help("show a progress bar", True)

    def __post_init__(self):
        if self.shard and self.merge:
            raise ValueError("give shard=I/N (tile one share) or merge=true (join the shares), not both")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.mpp_override is not None and self.mpp_override <= 0:
            raise ValueError(f"mpp_override must be > 0, got {self.mpp_override}")
