"""Stage 2: the embedding-conditioned diffusion model, E-LDM (METHOD.md stage 2).

A diffusers ``UNet2DConditionModel`` learns p(tile | e) where e is the frozen stage-1
embedding of that tile: e is L2-normalised and projected to cross-attention tokens, and
replaced by a learned null embedding with probability ``p_uncond`` so that classifier-free
guidance works. DDPM training (epsilon or v prediction) in pixel space for small tiles, in
an ``AutoencoderKL``'s latent space for large ones. The EMA of the weights (diffusers
``EMAModel``) is what gets exported, as an :class:`EmbeddingDiffusionPipeline` folder.
Embeddings are computed once and cached in ``out/embeddings.h5``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.training_utils import EMAModel
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.nn import functional as F

from gensis.atomic import atomic_path
from gensis.config.stage2 import Stage2Config
from gensis.data.conditioned_tiles import open_conditioned_tiles
from gensis.data.embeddings_store import matches, read_embeddings
from gensis.data.tile_source import open_tiles
from gensis.diffusion.condition_noise import training_condition
from gensis.diffusion.pipeline import EmbeddingDiffusionPipeline, make_scheduler
from gensis.errors import GensisError
from gensis.evaluation.embed_run import embed_tiles, pick_device
from gensis.evaluation.image_grid import save_png, tile_grid
from gensis.models.backbone import encoder_hash, file_hash, load_encoder
from gensis.models.conditional_unet import build_unet, denoise
from gensis.models.embedding_conditioner import EmbeddingConditioner
from gensis.training.run_dir import merge_metrics, plot_metrics, prepare_run_dir
from gensis.training.trainer import adamw_with_warmup, make_trainer, save_metrics, training_loader


def embedding_center(embeddings: np.ndarray) -> list[float]:
    """The mean of the training tiles' L2-normalised embeddings (the conditioner centres on it)."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    return unit.mean(0).astype(np.float64).tolist()


def load_vae(cfg: Stage2Config) -> AutoencoderKL | None:
    """The frozen autoencoder of latent space, or None in pixel space."""
    if cfg.generator.resolved_space() == "pixel":
        return None
    if not cfg.generator.vae:
        raise GensisError(f"generator.image_size={cfg.generator.image_size} draws in latent space: give "
                          f"generator.vae=<local diffusers AutoencoderKL folder>, or generator.space=pixel")
    try:
        vae = AutoencoderKL.from_pretrained(cfg.generator.vae)
    except (OSError, ValueError, EnvironmentError) as err:
        raise GensisError(f"generator.vae={cfg.generator.vae}: not a diffusers AutoencoderKL folder ({err})") from None
    return vae.eval().requires_grad_(False)


def vae_factor(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def model_geometry(cfg: Stage2Config, vae: AutoencoderKL | None) -> tuple[int, int]:
    """(side, channels) of what the UNet denoises; one clear error when the sizes do not fit."""
    size = cfg.generator.image_size
    if vae is not None:
        if size % vae_factor(vae):
            raise GensisError(f"generator.image_size={size} is not divisible by the autoencoder's downsampling "
                              f"factor {vae_factor(vae)}")
        size, channels = size // vae_factor(vae), vae.config.latent_channels
    else:
        channels = 3
    halvings = 2 ** (len(cfg.unet.channels) - 1)
    if size % halvings:
        raise GensisError(f"the UNet's {len(cfg.unet.channels)} levels (unet.channels) halve its {size} px input "
                          f"{len(cfg.unet.channels) - 1} times; use a size divisible by {halvings} or fewer levels")
    return size, channels


class DiffusionModule(L.LightningModule):
    def __init__(self, cfg: Stage2Config, embed_dim: int, vae: AutoencoderKL | None = None,
                 center: list[float] | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.generator
        self._vae = [vae]  # frozen and not ours to checkpoint: kept out of the module's state
        sample_size, channels = model_geometry(cfg, vae)
        self.unet = build_unet(cfg.unet, sample_size, channels)
        self.conditioner = EmbeddingConditioner(embed_dim, cfg.unet.cross_attention_dim, d.n_tokens, d.p_uncond,
                                                center=center)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=d.train_timesteps, beta_schedule=d.beta_schedule,
                                             prediction_type=d.prediction, clip_sample=vae is None,
                                             rescale_betas_zero_snr=d.zero_terminal_snr,
                                             timestep_spacing="trailing")  # few-step samplers start at pure noise
        self.ema = EMAModel(self.trainable_parameters(), decay=cfg.ema.decay, use_ema_warmup=cfg.ema.warmup,
                            power=2 / 3)

    @property
    def vae(self) -> AutoencoderKL | None:
        return self._vae[0]

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.unet.parameters(), *self.conditioner.parameters()]

    def on_train_start(self):
        self.ema.to(self.device)
        if self.vae is not None:
            self.vae.to(self.device)

    @torch.no_grad()
    def to_model_space(self, batch: dict) -> torch.Tensor:
        """What the UNet denoises: the tiles in [-1, 1], or scaled latents (cached, or encoded here)."""
        if self.vae is None:
            return batch["image"]
        if "latent" in batch:
            latents = batch["latent"]
        else:
            latents = self.vae.encode(batch["image"].to(self.vae.dtype)).latent_dist.sample()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (latents.float() - shift) * self.vae.config.scaling_factor

    def training_step(self, batch, batch_idx):
        x0 = self.to_model_space(batch)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)
        condition = training_condition(batch["embedding"], self.cfg.generator.condition_noise,
                                       self.noise_scheduler.alphas_cumprod)
        tokens = self.conditioner(condition)
        prediction = denoise(self.unet, noisy, t, tokens.to(noisy.dtype))
        target = noise if self.cfg.generator.prediction == "epsilon" else self.noise_scheduler.get_velocity(x0, noise, t)
        loss = F.mse_loss(prediction.float(), target.float())
        if not torch.isfinite(loss):
            raise GensisError(f"diffusion loss is {loss.item()} at step {self.global_step}; lower train.lr or check data")
        self.log_dict({"train/loss": loss, "train/lr": self.optimizers().param_groups[0]["lr"]},
                      on_step=True, on_epoch=False, batch_size=x0.shape[0])
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.ema.step(self.trainable_parameters())
        self.log("train/ema_decay", float(self.ema.cur_decay_value or 0.0), on_step=True, on_epoch=False)

    def configure_optimizers(self):
        o = self.cfg.train
        return adamw_with_warmup(self.trainable_parameters(), o.lr, o.weight_decay, o.warmup_steps)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint):
        if "ema" not in checkpoint:
            raise GensisError("the checkpoint has no EMA weights; it was not written by gensis stage2")
        self.ema.load_state_dict(checkpoint["ema"])
        self.ema.decay, self.ema.use_ema_warmup = self.cfg.ema.decay, self.cfg.ema.warmup  # the config rules

    def ema_pipeline(self, sampler: str | None = None) -> EmbeddingDiffusionPipeline:
        """A pipeline on copies of the UNet and conditioner holding the EMA weights."""
        unet, conditioner = copy.deepcopy(self.unet), copy.deepcopy(self.conditioner)
        self.ema.copy_to([*unet.parameters(), *conditioner.parameters()])
        scheduler = (make_scheduler(sampler, self.noise_scheduler.config) if sampler
                     else DDPMScheduler.from_config(self.noise_scheduler.config))
        pipe = EmbeddingDiffusionPipeline(unet.eval(), scheduler, conditioner.eval(), self.vae)
        pipe.set_progress_bar_config(disable=True)
        return pipe


def export_pipeline(module: DiffusionModule, out: Path, info: dict) -> Path:
    """``out/pipeline``: the EMA model as a diffusers pipeline folder (atomic), with ``gensis.json``."""
    pipe = module.ema_pipeline()
    target = out / "pipeline"
    with atomic_path(target) as tmp:
        pipe.save_pretrained(tmp)
        (tmp / "gensis.json").write_text(json.dumps({**info, "global_step": module.global_step}, indent=2))
    return target


class PipelineExport(L.Callback):
    """After every epoch (rank 0): the EMA pipeline folder and ``metrics.csv``."""

    def __init__(self, info: dict):
        self.info = info

    def on_train_epoch_end(self, trainer, module):
        if trainer.is_global_zero:
            export_pipeline(module, Path(trainer.default_root_dir), self.info)
            save_metrics(trainer)


class SampleGrid(L.Callback):
    """``samples/epoch_NNNN.png`` every ``every`` epochs and at the end (rank 0): each row a real tile, then
    ``views`` tiles drawn from its embedding by the EMA model (fixed seeds, so grids compare across epochs)."""

    def __init__(self, cfg: Stage2Config, real: list[np.ndarray], embeddings: np.ndarray):
        self.cfg, self.real, self.embeddings = cfg, real, embeddings

    def on_train_epoch_end(self, trainer, module):
        epoch, every = trainer.current_epoch + 1, self.cfg.samples.every
        last = epoch == trainer.max_epochs or (0 < trainer.max_steps <= trainer.global_step)
        if not trainer.is_global_zero or not self.real or not (last or (every and epoch % every == 0)):
            return
        s, k = self.cfg.sampler, self.cfg.samples.views
        pipe = module.ema_pipeline(s.name)
        embeddings = torch.from_numpy(np.repeat(self.embeddings, k, axis=0))
        with torch.autocast(module.device.type, dtype=torch.bfloat16, enabled=module.device.type == "cuda"):
            views = pipe(embeddings, s.steps, s.guidance, seeds=list(range(len(embeddings))),
                         output_type="uint8").images
        rows = [[real, *views[i * k:(i + 1) * k]] for i, real in enumerate(self.real)]
        save_png(tile_grid(rows), Path(trainer.default_root_dir) / "samples" / f"epoch_{epoch:04d}.png")


def on_first_process(path: Path, make, ready) -> Path:
    """``make()`` writes ``path`` on the first process; processes launched together (SLURM, torchrun) wait
    until ``ready()`` says it is there and current. (Processes Lightning launches itself start after the
    first one got here.)"""
    if rank_zero_only.rank == 0:
        make()
    else:
        waited = 0
        while not ready():
            time.sleep(5)
            waited += 5
            if waited % 600 == 0:
                print(f"process {rank_zero_only.rank}: still waiting for the first process to write {path}")
    return path


def cache_embeddings(cfg: Stage2Config, out: Path, spec) -> Path:
    """The tiles' embeddings: ``embeddings=`` if given, else computed once into ``out/embeddings.h5``."""
    if cfg.embeddings:
        return Path(cfg.embeddings)
    path, device = out / "embeddings.h5", pick_device(cfg.trainer)
    keys, dim, weights_hash = open_tiles(cfg.data.path).keys, spec.embed_dim, encoder_hash(cfg.encoder)
    return on_first_process(path, lambda: embed_tiles(
        cfg.encoder, cfg.data.path, path, batch_size=cfg.data.batch_size, workers=cfg.data.workers, device=device,
        bf16=device.type == "cuda", progress=cfg.progress),
        ready=lambda: matches(path, keys, dim, weights_hash, complete=True))


def training_data(cfg: Stage2Config, out: Path, vae, embeddings: np.ndarray, keys: list[str]):
    """Tiles with their embeddings, or (latent space with ``cache_latents``) cached latents with them."""
    d = cfg.generator
    dataset = open_conditioned_tiles(cfg.data.path, d.image_size, embeddings, keys, d.dihedral)
    if vae is None or not d.cache_latents:
        return dataset
    from gensis.data.latent_cache import CachedLatents, cache_latents, latent_cache_matches

    path, device = out / "latents.h5", pick_device(cfg.trainer)
    vae_hash = "-".join(file_hash(f)[:8] for f in sorted(Path(cfg.generator.vae).iterdir()) if f.is_file())
    on_first_process(path, lambda: cache_latents(vae, cfg.data.path, d.image_size, path, vae_hash, device,
                                                 cfg.data.batch_size, cfg.data.workers, cfg.progress),
                     ready=lambda: latent_cache_matches(path, keys, vae_hash, d.image_size))
    return CachedLatents(path, embeddings, d.dihedral)


def run(cfg: Stage2Config) -> int:
    if not cfg.data.path:
        raise GensisError("give data.path=<tiles> (a folder of images, a tiles.h5 or a tiling output dir)")
    _, spec = load_encoder(cfg.encoder)
    vae = load_vae(cfg)
    model_geometry(cfg, vae)   # sizes checked before any work
    out, ckpt = prepare_run_dir(cfg.out, cfg, cfg.resume, keys=open_tiles(cfg.data.path).keys)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    embeddings_path = cache_embeddings(cfg, out, spec)
    embeddings, keys, attrs = read_embeddings(embeddings_path)
    weights_hash = encoder_hash(cfg.encoder)
    if attrs.get("encoder") != weights_hash:
        raise GensisError(f"embeddings={embeddings_path} were made by another encoder than encoder={cfg.encoder}; "
                          f"embed the tiles with this encoder or leave embeddings= unset")
    dataset = training_data(cfg, out, vae, embeddings, keys)
    info = {"encoder": str(Path(cfg.encoder).resolve()), "encoder_sha256": weights_hash, "embed_dim": spec.embed_dim,
            "image_size": cfg.generator.image_size, "space": cfg.generator.resolved_space(),
            "tiles": str(cfg.data.path), "n_tiles": len(dataset)}
    rows = np.random.default_rng(cfg.seed).choice(len(dataset), min(cfg.samples.rows, len(dataset)), replace=False)
    plain = open_tiles(cfg.data.path)
    real = [np.asarray(_resize(plain[int(i)]["image"], cfg.generator.image_size)) for i in rows]
    callbacks = [PipelineExport(info), SampleGrid(cfg, real, embeddings[rows])]
    trainer = make_trainer(cfg.trainer, out, callbacks, epochs=cfg.train.epochs, progress=cfg.progress,
                           gradient_clip_val=cfg.train.clip_grad or None)
    loader = training_loader(dataset, *cfg.train.batch(cfg.data), trainer, cfg.data)
    module = DiffusionModule(cfg, spec.embed_dim, vae, center=embedding_center(embeddings)
                             if cfg.generator.center_embeddings else None)
    trainer.fit(module, loader, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.is_global_zero:
        pipeline = export_pipeline(module, out, info)
        merge_metrics(out)
        plot_metrics(out / "metrics.csv", out / "loss.png", ("train/loss", "train/lr"), title="stage 2 (E-LDM)")
        print(f"stage 2 done: {trainer.global_step} steps -> {out} (pipeline/, samples/, checkpoints/last.ckpt, "
              f"metrics.csv, loss.png)")
        if cfg.report.tiles:
            from gensis.evaluation.generation_quality import assess_generator

            device = pick_device(cfg.trainer)   # fit's teardown moved the module back to the CPU
            assess_generator(pipeline, cfg.encoder, cfg.data.path, out / "report", cfg.sampler, cfg.report,
                             seed=cfg.seed, device=device, batch_size=cfg.data.batch_size, progress=cfg.progress)
    return 0


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
