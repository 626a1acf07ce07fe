"""``gensis autoencoder``: a diffusers ``AutoencoderKL`` trained on the lab's tiles, for latent-space stage 2.

The latent diffusion recipe of METHOD.md stage 2 (256 px tiles -> 64 x 64 x 3 or 4 latents)
needs an autoencoder; nothing can be downloaded, so gensis trains one: L1 reconstruction
plus a small KL term (the LDM weighting: KL summed per image, weight 1e-6 against the
per-image L1 sum). Held-out tiles give PSNR / SSIM and a reconstruction grid every epoch.
The latents' scale is measured at the end and stored as ``scaling_factor`` (LDM practice:
unit-variance latents), and the model is saved with ``save_pretrained`` to ``out/vae``,
the folder ``gensis stage2 generator.vae=...`` takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import Subset

from gensis.atomic import atomic_path
from gensis.config.stage2 import AutoencoderConfig
from gensis.data.conditioned_tiles import diffusion_transform
from gensis.data.tile_source import open_tiles
from gensis.errors import GensisError
from gensis.evaluation.image_grid import save_png, tile_grid
from gensis.models.autoencoder import build_autoencoder
from gensis.training.run_dir import merge_metrics, plot_metrics, prepare_run_dir
from gensis.training.trainer import adamw_with_warmup, make_trainer, save_metrics, training_loader


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def reconstruction_metrics(real: np.ndarray, recon: np.ndarray) -> dict:
    """Mean PSNR (dB) and SSIM over uint8 image pairs."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr = [peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(real, recon)]
    ssim = [structural_similarity(a, b, channel_axis=-1, data_range=255) for a, b in zip(real, recon)]
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


class AutoencoderModule(L.LightningModule):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        self.vae = build_autoencoder(cfg.vae)

    def training_step(self, batch, batch_idx):
        x = batch["image"]
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        l1 = (recon.float() - x.float()).abs().mean()
        kl = posterior.kl().mean() / x[0].numel()           # per-pixel scale, as the L1 term
        loss = l1 + self.cfg.vae.kl_weight * kl
        if not torch.isfinite(loss):
            raise GensisError(f"autoencoder loss is {loss.item()} at step {self.global_step}; lower train.lr")
        self.log_dict({"train/loss": loss, "train/l1": l1, "train/kl": kl}, on_step=True, on_epoch=False,
                      batch_size=x.shape[0])
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return loss

    def configure_optimizers(self):
        o = self.cfg.train
        return adamw_with_warmup(self.vae.parameters(), o.lr, o.weight_decay, o.warmup_steps)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self.vae.encode(images.to(self.device)).latent_dist.mode()).sample


class HeldOutReconstruction(L.Callback):
    """Every epoch (rank 0): PSNR / SSIM on the held-out tiles, ``samples/epoch_NNNN.png`` (real above
    reconstruction), the model saved to ``out/vae`` and ``metrics.csv``."""

    def __init__(self, held_out: torch.Tensor):
        self.held_out = held_out

    def on_train_epoch_end(self, trainer, module):
        if not trainer.is_global_zero:
            return
        module.eval()
        recon = torch.cat([module.reconstruct(chunk) for chunk in self.held_out.split(16)])
        module.train()
        real, rebuilt = to_uint8(self.held_out), to_uint8(recon)
        metrics = reconstruction_metrics(real, rebuilt)
        module.log_dict({f"val/{k}": v for k, v in metrics.items()}, rank_zero_only=True)
        out, epoch = Path(trainer.default_root_dir), trainer.current_epoch + 1
        save_png(tile_grid([list(real[:8]), list(rebuilt[:8])]), out / "samples" / f"epoch_{epoch:04d}.png")
        export(module, out, self.held_out, {**metrics, "epoch": epoch, "global_step": trainer.global_step})
        save_metrics(trainer)


@torch.no_grad()
def export(module: AutoencoderModule, out: Path, held_out: torch.Tensor, metrics: dict) -> Path:
    """Measure the latents' scale, store it as ``scaling_factor`` and save ``out/vae`` (atomic)."""
    latents = torch.cat([module.vae.encode(chunk.to(module.device)).latent_dist.mode() for chunk in held_out.split(16)])
    scaling = float(1.0 / latents.float().std().clamp_min(1e-6))
    module.vae.register_to_config(scaling_factor=scaling)
    with atomic_path(out / "vae") as tmp:
        module.vae.save_pretrained(tmp)
    with atomic_path(out / "reconstruction.json") as tmp:
        tmp.write_text(json.dumps({**metrics, "scaling_factor": scaling}, indent=2))
    return out / "vae"


def run(cfg: AutoencoderConfig) -> int:
    if not cfg.data.path:
        raise GensisError("give data.path=<tiles> (a folder of images, a tiles.h5 or a tiling output dir)")
    tiles = open_tiles(cfg.data.path, transform=diffusion_transform(cfg.vae.image_size))
    out, ckpt = prepare_run_dir(cfg.out, cfg, cfg.resume, keys=tiles.keys)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if len(tiles) <= cfg.held_out:
        raise GensisError(f"data.path={cfg.data.path}: {len(tiles)} tiles, not more than held_out={cfg.held_out}")
    order = np.random.default_rng(cfg.seed).permutation(len(tiles))
    held_out = torch.stack([tiles[int(i)]["image"] for i in order[:cfg.held_out]])
    train = Subset(tiles, order[cfg.held_out:].tolist())
    trainer = make_trainer(cfg.trainer, out, [HeldOutReconstruction(held_out)], epochs=cfg.train.epochs,
                           progress=cfg.progress, gradient_clip_val=cfg.train.clip_grad or None)
    batch, batch_key = cfg.train.batch(cfg.data)
    loader = training_loader(train, batch, f"{batch_key} or held_out", trainer, cfg.data)
    module = AutoencoderModule(cfg)
    trainer.fit(module, loader, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.is_global_zero:
        merge_metrics(out)
        plot_metrics(out / "metrics.csv", out / "loss.png", ("train/l1", "val/psnr", "val/ssim"),
                     title="autoencoder")
        result = json.loads((out / "reconstruction.json").read_text())
        print(f"autoencoder done: {trainer.global_step} steps, held-out PSNR {result['psnr']:.2f} dB, SSIM "
              f"{result['ssim']:.3f} -> {out / 'vae'} (use it as gensis stage2 generator.vae={out / 'vae'})")
    return 0
