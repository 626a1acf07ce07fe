"""Views per second of the stage-2 pipeline at a given model size (random weights: speed only).

    python benchmarks/generate_throughput.py --experiment paper --gpu        # 256 px, latent, bf16
    python benchmarks/generate_throughput.py --experiment cpu_small          # 32 px, pixel, CPU

Builds the UNet, conditioner and (for latent space) an AutoencoderKL with the sizes of the
experiment preset, as ``gensis stage2`` / ``gensis autoencoder`` would, and times drawing
``--images`` views in batches of ``--batch`` with each sampler setting (after one warm-up
batch). Prints and writes JSON lines: sampler, steps, guidance, views/s, peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="paper")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--embed-dim", type=int, default=384)
    parser.add_argument("--settings", nargs="+", default=["dpm++:20:2", "dpm++:10:2", "ddim:50:2"],
                        help="sampler:steps:guidance")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "generate_throughput.jsonl")
    args = parser.parse_args()

    import torch
    from diffusers import DDPMScheduler

    from gensis.cli import _all_blocks
    from gensis.config.compose import compose_config
    from gensis.config.stage2 import AutoencoderConfig, Stage2Config
    from gensis.diffusion.pipeline import EmbeddingDiffusionPipeline, make_scheduler
    from gensis.models.autoencoder import build_autoencoder
    from gensis.models.conditional_unet import build_unet
    from gensis.models.embedding_conditioner import EmbeddingConditioner

    overrides = ["data.path=x", "encoder=x", "out=x", f"experiment={args.experiment}"]
    cfg = compose_config("stage2", Stage2Config, overrides, other_blocks=_all_blocks())
    device = torch.device("cuda" if args.gpu else "cpu")
    vae = None
    size = cfg.generator.image_size
    if cfg.generator.resolved_space() == "latent":
        ae_cfg = compose_config("autoencoder", AutoencoderConfig, ["data.path=x", "out=x",
                                                                   f"experiment={args.experiment}"],
                                other_blocks=_all_blocks())
        vae = build_autoencoder(ae_cfg.vae).eval()
        size //= 2 ** (len(ae_cfg.vae.channels) - 1)
        channels = ae_cfg.vae.latent_channels
    else:
        channels = 3
    unet = build_unet(cfg.unet, size, channels)
    scheduler = DDPMScheduler(prediction_type=cfg.generator.prediction, timestep_spacing="trailing",
                              rescale_betas_zero_snr=cfg.generator.zero_terminal_snr)
    conditioner = EmbeddingConditioner(args.embed_dim, cfg.unet.cross_attention_dim, cfg.generator.n_tokens)
    pipe = EmbeddingDiffusionPipeline(unet.eval(), scheduler, conditioner.eval(), vae).to(device)
    pipe.set_progress_bar_config(disable=True)
    dtype = torch.bfloat16 if args.gpu else torch.float32
    e = torch.randn(args.batch, args.embed_dim)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for setting in args.settings:
        name, steps, guidance = setting.split(":")
        pipe.scheduler = make_scheduler(name, scheduler.config)
        with torch.autocast(device.type, dtype=dtype, enabled=args.gpu):
            pipe(e, int(steps), float(guidance), seeds=list(range(args.batch)))        # warm-up
            if args.gpu:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start, drawn = time.perf_counter(), 0
            while drawn < args.images:
                pipe(e, int(steps), float(guidance), seeds=list(range(drawn, drawn + args.batch)), output_type="uint8")
                drawn += args.batch
            if args.gpu:
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        row = {"experiment": args.experiment, "device": torch.cuda.get_device_name() if args.gpu else "cpu",
               "image_px": cfg.generator.image_size, "space": cfg.generator.resolved_space(), "sampler": name,
               "steps": int(steps), "guidance": float(guidance), "batch": args.batch, "views_per_s": drawn / seconds,
               "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if args.gpu else None,
               "unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6}
        print(json.dumps(row), flush=True)
        with open(args.json, "a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
