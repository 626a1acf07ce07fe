"""Configs of ``gensis stage2`` (E-LDM training), ``gensis generate`` and ``gensis assess``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from omegaconf import MISSING

from gensis.config.diffusion import (
    AutoencoderModelConfig,
    EMAConfig,
    GeneratorConfig,
    SampleGridConfig,
    SamplerConfig,
    UNetConfig,
    interval,
)
from gensis.config.tile import _help
from gensis.config.train import DataConfig, TrainerConfig


@dataclass(frozen=True)
class DiffusionOptimConfig:
    epochs: int = _help("training epochs", 100)
    lr: float = _help("AdamW learning rate (constant after warm-up)", 1e-4)
    warmup_steps: int = _help("linear learning-rate warm-up steps", 500)
    weight_decay: float = _help("AdamW weight decay", 0.01)
    clip_grad: float = _help("global gradient-norm clip (0: off)", 1.0)
    batch_size: Optional[int] = _help("training batch per device (null: data.batch_size, which also batches the "
                                      "embedding and caching passes)", None)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1 or null, got {self.batch_size}")

    def batch(self, data: DataConfig) -> tuple[int, str]:
        """The training batch and the key that set it: ``train.batch_size``, else ``data.batch_size``."""
        if self.batch_size is not None:
            return self.batch_size, "train.batch_size"
        return data.batch_size, "data.batch_size"


@dataclass(frozen=True)
class ReportConfig:
    tiles: int = _help("tiles used to measure fidelity and diversity (0: no report)", 64)
    views: int = _help("views drawn per tile for diversity", 4)
    pairs: int = _help("tile pairs for the interpolation check", 4)
    alphas: int = _help("alpha values in [0, 1] per pair", 6)
    noise_level: int = _help("views drawn with this noise on their condition, as generate.noise_level (0: none)", 0)
    adaptive_noise: bool = _help("scale noise_level per tile by its tissue share, as generate.adaptive_noise", False)
    neighbour_mix: float = _help("views drawn between their tile and a near one of the assessed tiles, as "
                                 "generate.neighbour_mix (0: off)", 0.0)
    neighbours: int = _help("how many nearest assessed tiles a view may be mixed with, as generate.neighbours", 5)

    def __post_init__(self):
        if self.noise_level < 0:
            raise ValueError(f"report.noise_level must be >= 0, got {self.noise_level}")
        if not 0 <= self.neighbour_mix <= 1 or self.neighbours < 1:
            raise ValueError(f"report.neighbour_mix must be in [0, 1] and report.neighbours >= 1, got "
                             f"{self.neighbour_mix}, {self.neighbours}")
        if self.tiles < 0 or self.tiles == 1 or self.views < 2 or self.pairs < 0 or self.alphas < 2:
            raise ValueError("report needs tiles = 0 or >= 2, views >= 2, pairs >= 0, alphas >= 2; got "
                             f"{self.tiles}, {self.views}, {self.pairs}, {self.alphas}")


@dataclass(frozen=True)
class Stage2Config:
    data: DataConfig = _help("training tiles", factory=DataConfig)
    encoder: str = _help("stage-1 run dir (encoder.safetensors + encoder.json): the conditioning embeddings", MISSING)
    out: str = _help("run directory", MISSING)
    embeddings: Optional[str] = _help("embeddings.h5 of these tiles from `gensis embed` (else cached in out/)", None)
    generator: GeneratorConfig = _help("what is drawn and how it is noised", factory=GeneratorConfig)
    unet: UNetConfig = _help("the conditional UNet", factory=UNetConfig)
    train: DiffusionOptimConfig = _help("optimisation (its own block: the DINO optim block does not apply)", factory=DiffusionOptimConfig)
    ema: EMAConfig = _help("EMA of the weights (the exported model)", factory=EMAConfig)
    sampler: SamplerConfig = _help("sampler of the sample grids and the report", factory=SamplerConfig)
    samples: SampleGridConfig = _help("sample grids (samples/epoch_NNNN.png)", factory=SampleGridConfig)
    report: ReportConfig = _help("fidelity / diversity / interpolation report at the end", factory=ReportConfig)
    trainer: TrainerConfig = _help("Lightning trainer", factory=TrainerConfig)
    resume: bool = _help("continue the run in out/ from its last checkpoint", False)
    seed: int = _help("random seed", 0)
    progress: bool = _help("show progress bars", True)


@dataclass(frozen=True)
class GenerateParams:
    views_per_tile: int = _help("K generated views of every tile", 4)
    interpolations: int = _help("M interpolated images (-1: as many as tiles)", -1)
    alpha: List[float] = _help("range of alpha for interpolations, drawn uniformly", factory=lambda: [0.2, 0.8])
    batch_size: int = _help("images drawn at once per device", 64)
    noise_level: int = _help("noise on each view's condition as at this DDPM timestep of the training schedule "
                             "(GenView; 0: none, e.g. 200 of 1000: views that stray further)", 0)
    adaptive_noise: bool = _help("scale noise_level per tile by its tissue share (GenView: more noise where the "
                                 "foreground fills the tile)", False)
    noise_levels: List[int] = _help("views at several condition-noise levels, easy to hard (e.g. [0,200,400]): "
                                    "views_per_tile views at each, for stage 3's gen.curriculum (replaces "
                                    "noise_level)", factory=list)
    neighbour_mix: float = _help("draw each view between its tile and one of its `neighbours` nearest tiles: its "
                                 "condition slerped towards the neighbour by a weight drawn up to this (GCL's "
                                 "mixing in the conditioning space; 0: off, e.g. 0.5: views of the tile's kind "
                                 "that are not the tile)", 0.0)
    neighbours: int = _help("how many nearest tiles (embedding cosine) a view may be mixed with", 5)

    def __post_init__(self):
        if self.views_per_tile < 0 or self.interpolations < -1 or self.batch_size < 1:
            raise ValueError("generate needs views_per_tile >= 0, interpolations >= -1, batch_size >= 1")
        if self.noise_level < 0:
            raise ValueError(f"generate.noise_level must be >= 0, got {self.noise_level}")
        if any(level < 0 for level in self.noise_levels):
            raise ValueError(f"generate.noise_levels must be >= 0, got {list(self.noise_levels)}")
        if self.noise_levels and (self.noise_level or self.adaptive_noise):
            raise ValueError("generate.noise_levels replaces noise_level and adaptive_noise: give one or the other")
        if not 0 <= self.neighbour_mix <= 1:
            raise ValueError(f"generate.neighbour_mix must be in [0, 1], got {self.neighbour_mix}")
        if self.neighbours < 1:
            raise ValueError(f"generate.neighbours must be >= 1, got {self.neighbours}")
        interval(self.alpha, "generate.alpha")


@dataclass(frozen=True)
class GenerateConfig:
    diffusion: str = _help("stage-2 run dir (or its pipeline/ folder)", MISSING)
    encoder: str = _help("stage-1 run dir: embeds the tiles the views are drawn from", MISSING)
    data: DataConfig = _help("tiles to draw views of (the stage-3 training tiles)", factory=DataConfig)
    out: str = _help("views.h5 to write", MISSING)
    generate: GenerateParams = _help("how many views and interpolations", factory=GenerateParams)
    sampler: SamplerConfig = _help("sampler, steps and guidance", factory=SamplerConfig)
    trainer: TrainerConfig = _help("devices (several processes shard the work) and precision",
                                   factory=TrainerConfig)
    seed: int = _help("seed of the pairs, alphas and noise", 0)
    progress: bool = _help("show a progress bar", True)


@dataclass(frozen=True)
class AssessConfig:
    diffusion: str = _help("stage-2 run dir (or its pipeline/ folder)", MISSING)
    encoder: str = _help("stage-1 run dir (the encoder the model is conditioned on)", MISSING)
    data: DataConfig = _help("tiles to draw from", factory=DataConfig)
    out: str = _help("folder for generation.json, generation.md and pictures", MISSING)
    sampler: SamplerConfig = _help("sampler, steps and guidance", factory=SamplerConfig)
    report: ReportConfig = _help("how many tiles, views, pairs and alphas", factory=ReportConfig)
    trainer: TrainerConfig = _help("device and precision", factory=TrainerConfig)
    seed: int = _help("seed of the tiles, noise and augmentations", 0)
    progress: bool = _help("show progress bars", True)


@dataclass(frozen=True)
class AutoencoderConfig:
    data: DataConfig = _help("training tiles", factory=DataConfig)
    out: str = _help("run directory (the model lands in out/vae, a diffusers AutoencoderKL folder)", MISSING)
    vae: AutoencoderModelConfig = _help("the autoencoder", factory=AutoencoderModelConfig)
    train: DiffusionOptimConfig = _help("optimisation", factory=DiffusionOptimConfig)
    held_out: int = _help("tiles kept out of training for the reconstruction metrics", 64)
    trainer: TrainerConfig = _help("Lightning trainer", factory=TrainerConfig)
    resume: bool = _help("continue the run in out/ from its last checkpoint", False)
    seed: int = _help("random seed", 0)
    progress: bool = _help("show progress bars", True)
