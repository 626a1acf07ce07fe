"""The E-LDM denoiser: a diffusers ``UNet2DConditionModel`` whose cross-attention reads embedding tokens."""

from __future__ import annotations

from diffusers import UNet2DConditionModel

from gensis.config.diffusion import UNetConfig


def build_unet(cfg: UNetConfig, sample_size: int, channels: int) -> UNet2DConditionModel:
    """A UNet over ``channels`` x ``sample_size``^2 inputs (RGB pixels or autoencoder latents).

    Levels with ``cfg.attention`` use cross-attention blocks (the conditioning enters there
    and in the mid block); the others are plain ResNet blocks, which keeps small models fast.
    """
    levels = len(cfg.channels)
    if sample_size % 2 ** (levels - 1):
        raise ValueError(f"the UNet's {levels} levels halve the input {levels - 1} times; "
                         f"input size {sample_size} is not divisible by {2 ** (levels - 1)}")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels,
        down_block_types=down, up_block_types=up, block_out_channels=tuple(cfg.channels),
        layers_per_block=cfg.layers_per_block, norm_num_groups=cfg.norm_groups,
        cross_attention_dim=cfg.cross_attention_dim,
        # diffusers reads attention_head_dim as the number of heads per level
        attention_head_dim=tuple(max(1, c // cfg.head_dim) for c in cfg.channels))
