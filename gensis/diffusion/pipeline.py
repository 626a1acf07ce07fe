"""``EmbeddingDiffusionPipeline``: stage-1 embeddings -> tiles (METHOD.md stage 2).

A diffusers pipeline of three parts, saved with ``save_pretrained`` and loaded with
``from_pretrained``: the UNet, the :class:`EmbeddingConditioner` (embedding -> tokens, with
the null embedding for classifier-free guidance) and a scheduler, plus an optional
``AutoencoderKL`` when the model draws latents. Any diffusers scheduler made from the saved
one's config can be swapped in (:func:`make_scheduler`).

Example::

    pipe = EmbeddingDiffusionPipeline.from_pretrained("run/pipeline")
    pipe.scheduler = make_scheduler("dpm++", pipe.scheduler.config)
    images = pipe(embeddings, num_inference_steps=20, guidance_scale=2.0, seeds=[0, 1]).images
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    ImagePipelineOutput,
    UniPCMultistepScheduler,
)

from gensis.errors import GensisError
from gensis.models.conditional_unet import denoise
from gensis.models.embedding_conditioner import EmbeddingConditioner


def make_scheduler(name: str, config):
    """A sampler from a (training) scheduler config: ddim | dpm++ | ddpm | euler | unipc."""
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    if name == "ddpm":
        return DDPMScheduler.from_config(config)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config)
    raise ValueError(f"unknown sampler {name!r}; use ddim | dpm++ | ddpm | euler | unipc")


class EmbeddingDiffusionPipeline(DiffusionPipeline):
    """Draw tiles from embeddings: classifier-free guided denoising, then decoding if latent.

    ``pipe(embeddings)`` with ``embeddings`` (B, D) returns ``ImagePipelineOutput``; with
    ``seeds`` each image's starting noise comes from its own seed, so an image does not depend on
    which batch it was drawn in.
    """

    model_cpu_offload_seq = "conditioner->unet->vae"
    _optional_components = ["vae"]

    def __init__(self, unet, scheduler, conditioner: EmbeddingConditioner, vae=None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, conditioner=conditioner, vae=vae)

    @property
    def image_size(self) -> int:
        size = self.unet.config.sample_size
        if self.vae is not None:
            size *= 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(size)

    def initial_noise(self, batch: int, seeds: Sequence[int] | None, generator, device, dtype) -> torch.Tensor:
        shape = (self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        if seeds is not None:
            if len(seeds) != batch:
                raise ValueError(f"got {len(seeds)} seeds for {batch} embeddings")
            noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                                 for s in seeds])
        else:
            noise = torch.randn((batch, *shape), generator=generator)
        return noise.to(device=device, dtype=dtype)

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, num_inference_steps: int = 20, guidance_scale: float = 2.0,
                 seeds: Sequence[int] | None = None, generator: torch.Generator | None = None,
                 output_type: str = "np") -> ImagePipelineOutput:
        """``output_type``: "np" (float B x H x W x 3 in [0, 1]), "uint8", "pt" (B x 3 x H x W in [0, 1]) or "pil"."""
        device, dtype = self.unet.device, self.unet.dtype
        embeddings = torch.as_tensor(embeddings).to(device)
        batch = embeddings.shape[0]
        # guidance g: unconditional + g (conditional - unconditional); g = 1 is the condition alone, g = 0 ignores it
        tokens = self.conditioner(embeddings, drop=torch.full((batch,), guidance_scale == 0, device=device))
        guided = guidance_scale not in (0.0, 1.0)
        if guided:
            null = self.conditioner(embeddings, drop=torch.ones(batch, dtype=torch.bool, device=device))
            tokens = torch.cat([null, tokens])
        tokens = tokens.to(dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)   # before init_noise_sigma (Euler)
        latents = self.initial_noise(batch, seeds, generator, device, dtype) * self.scheduler.init_noise_sigma
        if generator is None and seeds is not None:  # stochastic samplers (ddpm): reproducible, batch-dependent
            generator = torch.Generator(device).manual_seed(int(seeds[0]))
        takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if takes_generator else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            prediction = denoise(self.unet, model_input, t, tokens)
            if guided:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            latents = self.scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
        images = self.decode(latents)
        if output_type == "pt":
            return ImagePipelineOutput(images=images)
        array = images.permute(0, 2, 3, 1).float().cpu().numpy()
        if output_type == "np":
            return ImagePipelineOutput(images=array)
        uint8 = (array * 255).round().astype(np.uint8)
        if output_type == "uint8":
            return ImagePipelineOutput(images=uint8)
        if output_type == "pil":
            from PIL import Image

            return ImagePipelineOutput(images=[Image.fromarray(a) for a in uint8])
        raise ValueError(f"output_type must be np | uint8 | pt | pil, got {output_type!r}")

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model space -> images in [0, 1] (B x 3 x H x W)."""
        if self.vae is not None:
            shift = getattr(self.vae.config, "shift_factor", None) or 0.0
            latents = latents / self.vae.config.scaling_factor + shift
            latents = self.vae.decode(latents.to(self.vae.dtype)).sample
        return (latents.float() / 2 + 0.5).clamp(0, 1)


def pipeline_folder(path: str | Path) -> Path:
    """A stage-2 run dir's ``pipeline/`` folder, or ``path`` itself when it is one."""
    path = Path(path)
    return path / "pipeline" if (path / "pipeline" / "model_index.json").is_file() else path


def load_pipeline(path: str | Path, sampler: str | None = None) -> tuple[EmbeddingDiffusionPipeline, dict]:
    """A stage-2 run dir (or its ``pipeline/`` folder) -> (pipeline, its ``gensis.json`` info).

    ``sampler`` swaps in that diffusers scheduler, made from the saved training scheduler's config.
    """
    from diffusers.utils import logging as diffusers_logging

    path = Path(path)
    folder = pipeline_folder(path)
    if not (folder / "model_index.json").is_file():
        raise GensisError(f"diffusion={path}: not a stage-2 run dir or pipeline folder (no model_index.json; "
                          f"gensis stage2 writes <out>/pipeline)")
    diffusers_logging.disable_progress_bar()
    try:
        pipe = EmbeddingDiffusionPipeline.from_pretrained(folder)
    finally:
        diffusers_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    if sampler:
        pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    info_path = folder / "gensis.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return pipe, info
