"""The autoencoder of latent-space stage 2: a diffusers ``AutoencoderKL`` sized from the config."""

from __future__ import annotations

from diffusers import AutoencoderKL

from gensis.config.diffusion import AutoencoderModelConfig


def build_autoencoder(v: AutoencoderModelConfig) -> AutoencoderKL:
    """Encoder and decoder with ``len(v.channels)`` levels: latents are image_size / 2^(levels - 1) wide."""
    levels = len(v.channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(v.channels),
                         layers_per_block=v.layers_per_block, latent_channels=v.latent_channels,
                         norm_num_groups=v.norm_groups, sample_size=v.image_size)
