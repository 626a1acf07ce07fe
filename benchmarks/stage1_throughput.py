"""Stage-1 (DINO) training throughput of gensis: images/s and the share of step time spent waiting for data.

Runs the real ``gensis stage1`` module (same config composition, LightningModule, loader and
augmentations) for a fixed number of steps and times every step:

    python benchmarks/stage1_throughput.py --data TILES_DIR                      # CPU recipe (as lightly's)
    python benchmarks/stage1_throughput.py --data TILES_DIR --gpu                # ViT-S/16, 2x224 + 8x96, bf16
    python benchmarks/stage1_throughput.py --data TILES_DIR --compile            # backbones under torch.compile

Prints one JSON line (and writes it to --json): images/s after warm-up, seconds per step,
data-wait share (time between the end of one step and the start of the next, over the
whole step time).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402


class StepTimer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup = warmup
        self.batch_ready, self.step_done, self.first_of_epoch, self.fetched = [], [], [], []

    def wrap(self, module):
        """Time the moment the loader hands a batch over (before transfer and on-device augmentation)."""
        original = module.on_before_batch_transfer

        def hook(batch, dataloader_idx):
            self.fetched.append(time.perf_counter())
            return original(batch, dataloader_idx)

        module.on_before_batch_transfer = hook

    def setup(self, trainer, module, stage):
        self.wrap(module)

    def _sync(self, module):
        import torch

        if module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._sync(module)
        self.batch_ready.append(time.perf_counter())
        self.first_of_epoch.append(batch_idx == 0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._sync(module)
        self.step_done.append(time.perf_counter())

    def summary(self, images_per_step: int) -> dict:
        """Steady-state figures: intervals that cross an epoch end (checkpoint, export, loader restart) are
        left out, since their length depends on how small the benchmark's epoch is."""
        ready, done = self.batch_ready[self.warmup:], self.step_done[self.warmup:]
        first = self.first_of_epoch[self.warmup:]
        intervals = [i for i in range(len(done) - 1) if not first[i + 1]]
        total = sum(done[i + 1] - done[i] for i in intervals)
        fetched = self.fetched[self.warmup:]
        wait = sum(fetched[i + 1] - done[i] for i in intervals)
        prepare = sum(ready[i + 1] - fetched[i + 1] for i in intervals)
        return {"steps_timed": len(intervals), "seconds_per_step": total / len(intervals),
                "images_per_s": images_per_step * len(intervals) / total, "data_wait_share": wait / total,
                "transfer_and_device_augment_share": prepare / total}


class CompileBackbones(L.Callback):
    """Compile the student's and teacher's backbones in place (``nn.Module.compile``: state-dict keys unchanged)."""

    def setup(self, trainer, module, stage):
        for net in (module.student, getattr(module, "teacher", None)):
            if net is not None:
                net.backbone.compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="tiles: folder of images, tiles.h5 or tiling output dir")
    parser.add_argument("--gpu", action="store_true", help="paper setting: ViT-S/16, 2x224 + 8x96 crops, bf16")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbones (steps include none "
                        "of the compilation if --warmup covers it)")
    parser.add_argument("overrides", nargs="*", help="extra gensis stage1 key=value overrides")
    args = parser.parse_args()

    import torch

    from gensis.config.compose import compose_config
    from gensis.config.stage1 import Stage1Config
    from gensis.training import dino_fit
    from stages import stage1

    if args.gpu:
        batch, workers, steps = args.batch or 64, args.workers or 14, args.steps or 60
        overrides = ["backbone=vit_small", "trainer=gpu", "crops.global_size=224", "crops.local_size=96",
                     "crops.n_local=8"]
    else:
        batch, workers, steps = args.batch or 32, args.workers if args.workers is not None else 2, args.steps or 25
        overrides = ["backbone=vit_tiny_p8", "trainer=cpu", "backbone.img_size=64",
                     "crops.global_size=64", "crops.local_size=32", "crops.n_local=4", "dino.out_dim=65536"]
        torch.set_num_threads(2)
    out = Path(tempfile.mkdtemp(prefix="stage1-bench-"))
    overrides += [f"data.path={args.data}", f"out={out}", f"data.batch_size={batch}", f"data.workers={workers}",
                  f"trainer.max_steps={steps}", "optim.epochs=100", "progress=false", "trainer.log_every_n_steps=50",
                  *args.overrides]
    cfg = compose_config("stage1", Stage1Config, overrides)
    timer = StepTimer(args.warmup)
    original = dino_fit.make_trainer
    extra = [timer, CompileBackbones()] if args.compile else [timer]
    dino_fit.make_trainer = lambda t, o, callbacks, **kwargs: original(t, o, [*callbacks, *extra], **kwargs)
    stage1.run(cfg)
    crops = cfg.crops
    result = {"setting": "gpu" if args.gpu else "cpu", "backbone": cfg.backbone.name, "kwargs": dict(cfg.backbone.kwargs),
              "crops": f"{crops.n_global}x{crops.global_size} + {crops.n_local}x{crops.local_size}",
              "batch": batch, "workers": workers, "precision": cfg.trainer.resolved_precision(), "compile": args.compile,
              "device": torch.cuda.get_device_name(0) if args.gpu and torch.cuda.is_available() else "cpu",
              **timer.summary(batch)}
    line = json.dumps(result)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")


if __name__ == "__main__":
    main()
