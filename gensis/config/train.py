"""Config blocks shared by the training and feature commands (stage1, embed, eval, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from omegaconf import MISSING

from gensis.config.tile import _help


@dataclass(frozen=True)
class DataConfig:
    path: Optional[str] = _help("tiles: a folder of images, a tiles.h5, or a gensis tile output dir", MISSING)
    val: Optional[str] = _help("labeled tiles (class subfolders or labeled store) for kNN monitoring", None)
    train: Optional[str] = _help("eval: labeled training tiles (instead of a split of data.path)", None)
    test: Optional[str] = _help("eval: labeled test tiles (instead of a split of data.path)", None)
    batch_size: int = _help("images per batch per device", 64)
    workers: int = _help("DataLoader worker processes per device", 4)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"data.workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class BackboneConfig:
    name: str = _help("timm model name", "vit_small_patch16_224")
    img_size: int = _help("input size of global crops / embedding", 224)
    kwargs: Dict[str, Any] = _help("extra timm kwargs (patch_size, depth, embed_dim, ...)", factory=dict)
    weights: Optional[str] = _help("start from a local timm-compatible state dict (.safetensors/.pth)", None)
    drop_path_rate: float = _help("stochastic depth of the student", 0.1)


@dataclass(frozen=True)
class TrainerConfig:
    accelerator: str = _help("auto | cpu | gpu", "auto")
    devices: str = _help("auto, a count, or a list of device ids", "auto")
    num_nodes: int = _help("nodes (SLURM sets the rest)", 1)
    strategy: str = _help("auto | ddp | ...", "auto")
    precision: str = _help("auto (bf16-mixed on GPU, 32-true on CPU) or a Lightning precision", "auto")
    max_steps: int = _help("stop after this many optimizer steps (-1: run all epochs)", -1)
    log_every_n_steps: int = _help("logging interval", 10)
    eval_every: int = _help("epochs between kNN monitoring on data.val", 10)

    def __post_init__(self):
        value = str(self.devices).strip()
        ids = value.strip("[]").split(",") if value.startswith("[") else [value]
        if value not in ("auto", "-1") and not (ids and all(v.strip().isdigit() for v in ids if v.strip())
                                                and any(v.strip() for v in ids)):
            raise ValueError(f"trainer.devices must be auto, -1 (all), a count (2) or a list of device ids ([0,1]), "
                             f"got {self.devices!r}")

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        import torch

        on_gpu = self.accelerator in ("gpu", "cuda") or (self.accelerator == "auto" and torch.cuda.is_available())
        return "bf16-mixed" if on_gpu else "32-true"

    def resolved_devices(self):
        value = str(self.devices)
        if value == "auto":
            return "auto"
        if value.startswith("["):
            return [int(v) for v in value.strip("[]").split(",") if v.strip()]
        return int(value)
