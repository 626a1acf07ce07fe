"""Encoder quality at a given recipe on a labeled tile dataset (class subfolders, optional groups.csv).

    python benchmarks/quality.py DATASET_DIR [--recipe cpu_small] [--seeds 0 1 2] [--out benchmarks/out/quality]

For each seed: split the tiles by group (never by file when groups.csv exists), train
stage 1 on the training tiles only, then ``gensis eval`` the encoder and an untrained
encoder of the same architecture (``encoder=random``) on the same split. Reports kNN and
linear balanced accuracy, macro-F1 and AUC (mean and spread over seeds) as a Markdown
table and a plot, plus wall-clock time per stage. The stage-3 issue adds stages 2, 3 and
the ablations to this same script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gensis.data.tile_source import ImageFolderTiles  # noqa: E402
from gensis.evaluation.split import train_test_split  # noqa: E402


def gensis(*args: str) -> float:
    """Run a gensis command; returns its wall-clock seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gensis", *args], check=True, cwd=ROOT)
    return time.perf_counter() - start


def link_split(dataset: Path, keys: list[str], target: Path) -> None:
    """A folder of symlinks (class subfolders kept) holding only ``keys``."""
    for key in keys:
        link = target / key
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink((dataset / key).resolve(), link)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--recipe", default="cpu_small", help="experiment preset for stage 1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "quality")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("overrides", nargs="*", help="extra stage1 key=value overrides")
    args = parser.parse_args()

    tiles = ImageFolderTiles(args.dataset, labels=True)
    results = {"dataset": args.dataset.name, "recipe": args.recipe, "n_tiles": len(tiles), "classes": tiles.classes,
               "split": "by group" if tiles.groups is not None else "stratified by tile", "seeds": {}}
    for seed in args.seeds:
        run = args.out / f"seed{seed}"
        train, test = train_test_split(tiles.labels, tiles.groups, args.test_fraction, seed)
        link_split(args.dataset, [tiles.keys[i] for i in train], run / "train")
        link_split(args.dataset, [tiles.keys[i] for i in test], run / "test")
        done_file = run / "stage1_done.json"
        if done_file.is_file():
            seconds = json.loads(done_file.read_text())
        else:
            resume = ["resume=true"] if (run / "stage1" / "checkpoints" / "last.ckpt").is_file() else []
            seconds = {"stage1": gensis("stage1", f"data.path={run / 'train'}", f"out={run / 'stage1'}",
                                        f"experiment={args.recipe}", f"seed={seed}", "progress=false",
                                        *resume, *args.overrides)}
            done_file.write_text(json.dumps(seconds))
        scores = {}
        for name, encoder in (("stage1", str(run / "stage1")), ("random", "random")):
            out = run / f"eval_{name}"
            seconds[f"eval_{name}"] = gensis("eval", f"encoder={encoder}", f"data.train={run / 'train'}",
                                             f"data.test={run / 'test'}", f"out={out}", f"experiment={args.recipe}",
                                             f"seed={seed}", "progress=false", "data.workers=2")
            scores[name] = json.loads((out / "metrics.json").read_text())
        results["seeds"][seed] = {"seconds": seconds, "n_train": len(train), "n_test": len(test),
                                  "scores": {n: {p: {k: s[p][k] for k in ("balanced_accuracy", "macro_f1", "auc")}
                                                 for p in ("knn", "linear")} for n, s in scores.items()}}
        (args.out / "quality.json").write_text(json.dumps(results, indent=2))
    summarise(results, args.out)


def summarise(results: dict, out: Path) -> None:
    rows = ["| encoder | kNN bal. acc | kNN macro-F1 | kNN AUC | linear bal. acc | linear macro-F1 | linear AUC |",
            "|---|---|---|---|---|---|---|"]
    means = {}
    for name in ("random", "stage1"):
        cells = []
        for probe in ("knn", "linear"):
            for key in ("balanced_accuracy", "macro_f1", "auc"):
                values = np.array([s["scores"][name][probe][key] for s in results["seeds"].values()], float)
                means[(name, probe, key)] = values
                spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
                cells.append(f"{values.mean():.3f}{spread}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    (out / "quality.md").write_text(table + "\n")
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = ["random", "stage1"]
    for offset, probe in ((-0.2, "knn"), (0.2, "linear")):
        values = [means[(n, probe, "balanced_accuracy")] for n in names]
        ax.bar(np.arange(len(names)) + offset, [v.mean() for v in values], width=0.4,
               yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in values], label=probe, capsize=3)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("balanced accuracy")
    ax.set_title(f"{results['dataset']} ({results['recipe']}, {len(results['seeds'])} seed(s))")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=100)


if __name__ == "__main__":
    main()
