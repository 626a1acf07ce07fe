"""Config of ``gensis stage1`` (DINO, METHOD.md stage 1)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from gensis.config.tile import _help
from gensis.config.train import BackboneConfig, DataConfig, TrainerConfig
from gensis.config.augment import AugmentConfig, CropConfig
from gensis.config.ssl import SSLConfig


@dataclass(frozen=True)
class DinoConfig:
    out_dim: int = _help("head output size K", 65536)
    hidden_dim: int = _help("head MLP width", 2048)
    bottleneck_dim: int = _help("head bottleneck", 256)
    norm_last_layer: bool = _help("fix the norm of the head's last layer", True)
    head_batch_norm: bool = _help("batch norm after each hidden layer of the head (DINO's use_bn)", False)
    student_temp: float = _help("tau_s", 0.1)
    teacher_temp: float = _help("tau_t after warm-up", 0.04)
    warmup_teacher_temp: float = _help("tau_t at the start", 0.04)
    warmup_teacher_temp_epochs: int = _help("epochs of tau_t warm-up", 0)
    momentum_teacher: float = _help("teacher EMA momentum at the start (cosine to momentum_teacher_end)", 0.996)
    momentum_teacher_end: float = _help("teacher EMA momentum at the end (1: the paper; equal to the start: fixed, "
                                        "for short runs)", 1.0)
    center_momentum: float = _help("centre EMA momentum", 0.9)
    freeze_last_layer: int = _help("epochs during which the head's last layer is frozen", 1)


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = _help("training epochs", 100)
    lr: float = _help("peak learning rate per 256 images (scaled by total batch / 256)", 5e-4)
    min_lr: float = _help("final learning rate", 1e-6)
    warmup_epochs: int = _help("linear warm-up epochs", 10)
    weight_decay: float = _help("weight decay at the start (cosine)", 0.04)
    weight_decay_end: float = _help("weight decay at the end", 0.4)
    clip_grad: float = _help("per-tensor gradient norm clip (0: off)", 3.0)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"optim.epochs must be >= 1, got {self.epochs}")


@dataclass(frozen=True)
class Stage1Config:
    data: DataConfig = _help("training tiles", factory=DataConfig)
    out: str = _help("run directory", MISSING)
    backbone: BackboneConfig = _help("encoder", factory=BackboneConfig)
    ssl: SSLConfig = _help("the self-supervised method (DINO by default)", factory=SSLConfig)
    dino: DinoConfig = _help("DINO head and loss", factory=DinoConfig)
    crops: CropConfig = _help("multi-crop", factory=CropConfig)
    augment: AugmentConfig = _help("hand-made augmentations", factory=AugmentConfig)
    optim: OptimConfig = _help("optimisation", factory=OptimConfig)
    trainer: TrainerConfig = _help("Lightning trainer", factory=TrainerConfig)
    resume: bool = _help("continue the run in out/ from its last checkpoint", False)
    seed: int = _help("random seed", 0)
    progress: bool = _help("show progress bars", True)

    def __post_init__(self):
        if self.ssl.method != "dino" and self.crops.n_global < 2:
            raise ValueError(f"ssl.method={self.ssl.method} pairs two global crops: crops.n_global must be >= 2, "
                             f"got {self.crops.n_global}")
