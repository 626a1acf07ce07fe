"""What the lightly drivers share, so that every method is timed on one model and one loader: the
4-layer ViT-Tiny (patch 8) gensis's CPU benchmark trains, the common arguments, the forward precision,
the loader, and the timed loop (seconds per step after warm-up)."""

import argparse
import time

import timm
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder


def backbone() -> nn.Module:
    """timm's ViT-Tiny with 4 blocks and 8 px patches at 64 px (192-d CLS output), as gensis's vit_tiny_p8."""
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64,
                             dynamic_img_size=True, patch_size=8, depth=4)


def parser() -> argparse.ArgumentParser:
    """The arguments every driver takes (data folder, batch, workers, steps, warm-up steps)."""
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--precision", choices=["32", "bf16"], default="32",
                   help="bf16: forward passes under CPU autocast to bfloat16, as Lightning's bf16-mixed")
    return p


def forward_precision(args):
    """The context the forward passes and losses run in: autocast to bfloat16 for ``--precision bf16``."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")


def loader(args, transform) -> DataLoader:
    """2 torch threads, seed 0, and a shuffled loader of ``args.data`` with ``transform``."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    return DataLoader(ImageFolder(args.data, transform=transform), batch_size=args.batch, shuffle=True,
                      drop_last=True, num_workers=args.workers, persistent_workers=args.workers > 0)


def timed_steps(loader, step, steps: int, warmup: int, batch: int) -> dict:
    """Call ``step(batch, index)`` for ``steps`` batches of ``loader`` (epochs repeat as needed); returns
    seconds per step and images per second over the steps after the first ``warmup``."""
    index, times = 0, []
    while index < steps:
        for item in loader:
            step(item, index)
            times.append(time.perf_counter())
            index += 1
            if index >= steps:
                break
    timed = times[warmup:]
    seconds = (timed[-1] - timed[0]) / (len(timed) - 1)
    return {"seconds_per_step": seconds, "images_per_s": batch / seconds, "steps_timed": len(timed) - 1}
