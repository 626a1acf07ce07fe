"""Stage-1 recipes side by side: does the DINO loss leave ln K, and do the probes move?

    python benchmarks/stage1_recipes.py DATASET_DIR --recipe cpu_quality_2h --seeds 0 \\
        --setting base \\
        --setting weak_colour augment.brightness=0.2 augment.contrast=0.2 augment.saturation=0.1 \\
            augment.hue=0.02 augment.solarize=0 augment.grayscale=0

Uses quality.py's split (``OUT/data``; made here if absent, same arguments). Each
``--setting NAME KEY=VALUE ...`` trains stage 1 per seed into ``OUT/recipes/NAME/seed<k>`` with
the recipe plus the overrides, then ``gensis eval`` like the quality benchmark. The table gives
per setting: the final DINO loss as a share of ln K (mean of the last 5 logged steps), the
teacher's entropy after centring (last epoch, share of ln K), the agreement of the teacher on
two views, kNN and linear balanced accuracy, and their gain over the untrained encoder.
Writes recipes.json and recipes.md in OUT; resumable, and invocations with other seeds of a
setting may share OUT (each keeps the seeds the others wrote).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from quality import ROOT, cell, evaluate, prepare_split, save_entry, train

from gensis.training.run_dir import metric_points


def last(metrics_csv: Path, key: str, n: int = 1) -> float:
    """Mean of the last ``n`` logged values of ``key`` (nan when never logged)."""
    _, values = metric_points(metrics_csv, key)
    return float(np.mean(values[-n:])) if values else float("nan")


def run_summary(run: Path) -> dict:
    from omegaconf import OmegaConf

    ln_k = math.log(OmegaConf.load(run / "config.yaml").dino.out_dim)
    metrics = run / "metrics.csv"
    return {"loss_over_ln_k": last(metrics, "train/loss", 5) / ln_k,
            "teacher_entropy_over_ln_k": last(metrics, "diag/teacher_entropy") / ln_k,
            "view_agreement": last(metrics, "diag/view_agreement")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--recipe", default="cpu_quality_bn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--px", type=int, default=64)
    parser.add_argument("--ssl-tiles", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=None, help="quality.py's --out (default: its default)")
    parser.add_argument("--setting", nargs="+", action="append", required=True, metavar="TOKEN")
    args = parser.parse_args()
    out = args.out or ROOT / "benchmarks" / "out" / f"quality_{args.recipe}"
    data = out / "data"
    prepare_split(args.dataset, data, args.split_seed, args.test_fraction, args.ssl_tiles, args.px)
    results_json = out / "recipes.json"
    results = json.loads(results_json.read_text()) if results_json.is_file() else {}
    random = evaluate("random", out / "eval_random", data, args.recipe, args.split_seed)
    for tokens in args.setting:
        name, overrides = tokens[0], tokens[1:]
        entry = results.setdefault(name, {"overrides": overrides, "seeds": {}, "seconds": {}})
        if entry["overrides"] != overrides:
            raise SystemExit(f"--setting {name}: trained before with {entry['overrides']}; choose another name")
        for seed in args.seeds:
            run = out / "recipes" / name / f"seed{seed}"
            entry["seconds"][str(seed)] = train("stage1", run, f"data.path={data / 'ssl'}", f"experiment={args.recipe}",
                                                f"seed={seed}", *overrides)
            scores = evaluate(str(run), out / "recipes" / name / f"eval_seed{seed}", data, args.recipe, seed)
            entry["seeds"][str(seed)] = {**run_summary(run), **{p: scores[p]["balanced_accuracy"]
                                                                for p in ("knn", "linear")}}
            results = save_entry(results_json, name, entry)
    summarise(results, random, out)


def summarise(results: dict, random: dict, out: Path) -> None:
    rows = [f"untrained encoder: kNN {random['knn']['balanced_accuracy']:.3f}, "
            f"linear {random['linear']['balanced_accuracy']:.3f}", "",
            "| setting | seeds | loss / ln K | teacher entropy / ln K | view agreement | kNN | kNN - untrained "
            "| linear | linear - untrained | s per run |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        seeds = sorted(entry["seeds"])
        col = {key: np.array([entry["seeds"][s][key] for s in seeds]) for key in entry["seeds"][seeds[0]]}
        gain = {p: col[p] - random[p]["balanced_accuracy"] for p in ("knn", "linear")}
        label = name + (f" ({' '.join(entry['overrides'])})" if entry["overrides"] else "")
        seconds = np.mean([entry["seconds"][s] for s in seeds])
        rows.append(f"| {label} | {','.join(seeds)} | {cell(col['loss_over_ln_k'])} | "
                    f"{cell(col['teacher_entropy_over_ln_k'])} | {cell(col['view_agreement'])} | {cell(col['knn'])} | "
                    f"{cell(gain['knn'], True)} | {cell(col['linear'])} | {cell(gain['linear'], True)} | "
                    f"{seconds:.0f} |")
    table = "\n".join(rows)
    (out / "recipes.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"finished in {time.perf_counter() - started:.0f} s")
