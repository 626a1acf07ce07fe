"""The E-LDM denoiser: a diffusers ``UNet2DConditionModel`` whose cross-attention reads embedding tokens
(and, with ``time_conditioning``, whose timestep embedding gets them added too)."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from gensis.config.diffusion import UNetConfig


def build_unet(cfg: UNetConfig, sample_size: int, channels: int) -> UNet2DConditionModel:
    """A UNet over ``channels`` x ``sample_size``^2 inputs (RGB pixels or autoencoder latents).

    Levels with ``cfg.attention`` use cross-attention blocks (the conditioning enters there
    and in the mid block); the others are plain ResNet blocks, which keeps small models fast.
    With ``cfg.time_conditioning`` the mean token also goes through an MLP added to the timestep
    embedding (as unCLIP conditions on an image embedding), which every ResNet block reads.
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
        class_embed_type="projection" if cfg.time_conditioning else None,
        projection_class_embeddings_input_dim=cfg.cross_attention_dim if cfg.time_conditioning else None,
        # diffusers reads attention_head_dim as the number of heads per level
        attention_head_dim=tuple(max(1, c // cfg.head_dim) for c in cfg.channels))


def denoise(unet: UNet2DConditionModel, sample: torch.Tensor, t, tokens: torch.Tensor) -> torch.Tensor:
    """The UNet's prediction for ``sample`` at timestep ``t`` given embedding ``tokens`` (B, n, width): through
    cross-attention, and through the timestep embedding (their mean) when the UNet was built with
    ``time_conditioning`` (read from its config, so a loaded pipeline does the same)."""
    class_labels = tokens.mean(dim=1) if unet.config.class_embed_type == "projection" else None
    return unet(sample, t, encoder_hidden_states=tokens, class_labels=class_labels).sample
