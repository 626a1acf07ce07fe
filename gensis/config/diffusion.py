"""Config blocks of the embedding-conditioned diffusion model (METHOD.md stage 2) and its samplers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from gensis.config.tile import _help

SPACES = ("auto", "pixel", "latent")
PREDICTIONS = ("epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SAMPLERS = ("ddim", "dpm++", "ddpm", "euler", "unipc")


@dataclass(frozen=True)
class UNetConfig:
    channels: List[int] = _help("channels of each UNet level (coarser levels to the right)",
                                factory=lambda: [128, 256, 256, 256])
    attention: List[bool] = _help("cross-attention (the embedding tokens) at each level; the mid block always has it",
                                  factory=lambda: [False, True, True, True])
    layers_per_block: int = _help("ResNet layers per level", 2)
    head_dim: int = _help("width of one attention head", 64)
    cross_attention_dim: int = _help("width of the embedding tokens", 512)
    norm_groups: int = _help("GroupNorm groups", 32)
    time_conditioning: bool = _help("also add the embedding to the timestep embedding, so that every ResNet block "
                                    "sees it, not only the cross-attention levels (unCLIP's class_embed_type="
                                    "'projection')", False)

    def __post_init__(self):
        if len(self.channels) != len(self.attention):
            raise ValueError(f"unet.channels ({len(self.channels)} levels) and unet.attention "
                             f"({len(self.attention)}) must have one entry per level")
        if self.norm_groups < 1:
            raise ValueError(f"unet.norm_groups must be >= 1, got {self.norm_groups}")
        if any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"unet.channels {list(self.channels)} must be multiples of unet.norm_groups={self.norm_groups}")
        if any(c % self.head_dim for c in self.channels):
            raise ValueError(f"unet.channels {list(self.channels)} must be multiples of unet.head_dim={self.head_dim}")


@dataclass(frozen=True)
class GeneratorConfig:
    image_size: int = _help("side of the drawn tiles in pixels (tiles are resized to it)", 64)
    space: str = _help("pixel | latent | auto (latent when vae is given, else pixel up to pixel_max_size)", "auto")
    pixel_max_size: int = _help("space=auto draws in pixel space up to this size", 64)
    vae: Optional[str] = _help("latent space: a local diffusers AutoencoderKL folder", None)
    n_tokens: int = _help("cross-attention tokens made from one embedding", 1)
    p_uncond: float = _help("probability of the null embedding in training (classifier-free guidance)", 0.1)
    prediction: str = _help("epsilon | v_prediction (needed by zero_terminal_snr)", "v_prediction")
    train_timesteps: int = _help("DDPM noise steps", 1000)
    beta_schedule: str = _help("linear | scaled_linear | squaredcos_cap_v2", "linear")
    zero_terminal_snr: bool = _help("rescale the noise schedule so that its last step is pure noise (Lin et al. "
                                    "2023): drawn tiles then get the right brightness with few-step samplers", True)
    dihedral: bool = _help("train on random flips / 90-degree rotations of each tile (same embedding)", False)
    center_embeddings: bool = _help("centre the unit embeddings on their training mean before projecting them "
                                    "(gensis/models/embedding_conditioner.py): the condition keeps what tells "
                                    "tiles apart", True)
    condition_noise: int = _help("train on conditions noised at a random DDPM timestep up to this (GenView's "
                                 "formula, gensis/diffusion/condition_noise.py; 0: clean embeddings), so that "
                                 "p(tile | e) covers more than the one tile e came from", 0)
    cache_latents: bool = _help("latent space: encode every tile once into out/latents.h5 instead of every epoch",
                                True)

    def __post_init__(self):
        for key, value, allowed in (("space", self.space, SPACES), ("prediction", self.prediction, PREDICTIONS),
                                    ("beta_schedule", self.beta_schedule, BETA_SCHEDULES)):
            if value not in allowed:
                raise ValueError(f"generator.{key} must be one of {'|'.join(allowed)}, got {value!r}")
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(f"generator.image_size must be a multiple of 8, got {self.image_size}")
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"generator.p_uncond must be in [0, 1), got {self.p_uncond}")
        if self.n_tokens < 1:
            raise ValueError(f"generator.n_tokens must be >= 1, got {self.n_tokens}")
        if not 0 <= self.condition_noise <= self.train_timesteps:
            raise ValueError(f"generator.condition_noise must be in [0, train_timesteps], got {self.condition_noise}")
        if self.zero_terminal_snr and self.prediction != "v_prediction":
            raise ValueError("generator.zero_terminal_snr=true needs generator.prediction=v_prediction "
                             "(epsilon cannot be predicted from pure noise)")

    def resolved_space(self) -> str:
        if self.space != "auto":
            return self.space
        if self.vae:
            return "latent"
        return "pixel" if self.image_size <= self.pixel_max_size else "latent"


@dataclass(frozen=True)
class SamplerConfig:
    name: str = _help("ddim | dpm++ | ddpm | euler | unipc (any diffusers scheduler through the pipeline API)",
                      "dpm++")
    steps: int = _help("denoising steps (DPM-Solver++ 10 at guidance 2: see BENCHMARKS.md)", 10)
    guidance: float = _help("classifier-free guidance scale (1: the condition alone; above 1: stronger; below 1 "
                            "down to 0: weaker, 0 ignores the condition)", 2.0)

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler.name must be one of {'|'.join(SAMPLERS)}, got {self.name!r}")
        if self.steps < 1:
            raise ValueError(f"sampler.steps must be >= 1, got {self.steps}")
        if self.guidance < 0:
            raise ValueError(f"sampler.guidance must be >= 0, got {self.guidance}")


@dataclass(frozen=True)
class EMAConfig:
    decay: float = _help("maximum EMA decay of the UNet and conditioner weights", 0.9999)
    warmup: bool = _help("diffusers' EMA warm-up (decay grows as 1 - (1 + step)^-2/3)", True)

    def __post_init__(self):
        if not 0 <= self.decay < 1:
            raise ValueError(f"ema.decay must be in [0, 1), got {self.decay}")


@dataclass(frozen=True)
class SampleGridConfig:
    every: int = _help("epochs between sample grids (0: only at the end)", 1)
    rows: int = _help("real tiles in the grid (one per row; 0: no grids)", 4)
    views: int = _help("views drawn from each row's embedding", 4)

    def __post_init__(self):
        if self.rows < 0 or self.views < 1 or self.every < 0:
            raise ValueError(f"samples needs rows >= 0, views >= 1, every >= 0; got {self.rows}, {self.views}, "
                             f"{self.every}")


def interval(values: Tuple[float, float], name: str) -> Tuple[float, float]:
    if len(values) != 2:
        raise ValueError(f"{name} must be [low, high], got {list(values)}")
    low, high = float(values[0]), float(values[1])
    if not 0 <= low <= high <= 1:
        raise ValueError(f"{name} must be [low, high] with 0 <= low <= high <= 1, got {list(values)}")
    return low, high



@dataclass(frozen=True)
class AutoencoderModelConfig:
    image_size: int = _help("side of the tiles it is trained on (tiles are resized to it)", 256)
    channels: List[int] = _help("channels of each encoder level; the latent is image_size / 2^(levels - 1)",
                                factory=lambda: [128, 256, 512])
    latent_channels: int = _help("channels of the latent", 4)
    layers_per_block: int = _help("ResNet layers per level", 2)
    norm_groups: int = _help("GroupNorm groups", 32)
    kl_weight: float = _help("weight of the KL term against the L1 reconstruction loss", 1e-6)

    def __post_init__(self):
        if self.norm_groups < 1:
            raise ValueError(f"vae.norm_groups must be >= 1, got {self.norm_groups}")
        if any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"vae.channels {list(self.channels)} must be multiples of vae.norm_groups={self.norm_groups}")
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"vae.image_size={self.image_size} must be divisible by 2^(levels - 1)")
