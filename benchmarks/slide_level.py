"""Slide level: the quality benchmark's encoders compared by attention MIL on a synthetic cohort.

    python benchmarks/slide_level.py [--quality benchmarks/out/quality_cpu_quality_bn] [--slides 40]
                                     [--seeds 0 1 2] [--out benchmarks/out/slide_level]

Makes ``gensis synth cohort=N`` (1024 px slides whose label 1 is one small disc of nuclei), tiles
it as the encoders see tiles (32 px at 2 um/px), computes ``gensis features`` with an untrained
encoder of the same architecture and with each seed's stage-1 and stage-3 encoders, and runs
``gensis mil`` (5 folds) on each. Writes slide_level.json and slide_level.md (mean +/- sd over
seeds of the folds' mean AUC and balanced accuracy). Every step is skipped when its output exists.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def gensis(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gensis", *args, "progress=false"], check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", type=Path, default=ROOT / "benchmarks" / "out" / "quality_cpu_quality_bn")
    parser.add_argument("--slides", type=int, default=40)
    parser.add_argument("--lesion-um", type=float, default=48.0, help="radius of the nuclei region (smaller: harder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "slide_level")
    args = parser.parse_args()
    from gensis.models.backbone import load_encoder, save_encoder, create_backbone

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "cohort" / "slides.csv").is_file():
        gensis("synth", f"cohort={args.slides}", f"out={out / 'cohort'}", "width=1024", "height=1024",
               f"lesion_um={args.lesion_um}")
    if not (out / "tiles" / "tiles.h5").is_file():
        gensis("tile", f"slides={out / 'cohort' / 'slides.csv'}", f"out={out / 'tiles'}", "tile.mpp=2.0",
               "tile.size=32", "tile.mask_mpp=16.0", "workers=2")
    encoders = {}
    first = args.quality / f"seed{args.seeds[0]}" / "stage1"
    _, spec = load_encoder(first)
    if not (out / "random" / "encoder.json").is_file():
        import torch

        torch.manual_seed(0)
        save_encoder(out / "random", create_backbone(spec.name, spec.img_size, spec.kwargs), spec)
    encoders["random"] = [out / "random"]
    for name in ("stage1", "stage3"):
        encoders[name] = [args.quality / f"seed{s}" / name for s in args.seeds
                          if (args.quality / f"seed{s}" / name / "encoder.json").is_file()]
    results = {}
    for name, runs in encoders.items():
        for run in runs:
            label = f"{name}_{run.parent.name}" if name != "random" else "random"
            features, mil = out / "features" / label, out / "mil" / label
            if not (features / "features.json").is_file():
                gensis("features", f"encoder={run}", f"tiles={out / 'tiles'}", f"out={features}", "data.workers=0",
                       "trainer.accelerator=cpu")
            if not (mil / "metrics.json").is_file():
                gensis("mil", f"features={features}", f"labels={out / 'cohort' / 'slides.csv'}", f"out={mil}",
                       "trainer.accelerator=cpu")
            metrics = json.loads((mil / "metrics.json").read_text())
            results.setdefault(name, []).append({"run": str(run), "auc": metrics["auc"],
                                                 "balanced_accuracy": metrics["balanced_accuracy"]})
    lines = ["| encoder | runs | MIL AUC (mean of 5 folds) | MIL balanced accuracy |", "|---|---|---|---|"]
    for name, rows in results.items():
        auc = np.array([r["auc"] for r in rows])
        acc = np.array([r["balanced_accuracy"] for r in rows])
        lines.append(f"| {name} | {len(rows)} | {auc.mean():.3f} +/- {auc.std():.3f} | "
                     f"{acc.mean():.3f} +/- {acc.std():.3f} |")
    (out / "slide_level.json").write_text(json.dumps(results, indent=2))
    (out / "slide_level.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
