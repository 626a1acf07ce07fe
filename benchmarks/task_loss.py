"""How well stage 3 solves the disentanglement task: its loss late in each run of the quality sweep, beside chance.

    python benchmarks/task_loss.py --settings simclr_genp0 simclr_genp0_short --seeds 10 11 12 13 [--out OUT]

For each setting (a folder ``OUT/sweep/NAME`` of ``quality_sweep.py``) and seed whose run finished, the mean of ``train/disentangle``
in ``metrics.csv`` over the steps in the last ``--late`` share of the run (default: the second half). With
SimCLR the task is InfoNCE of the interpolated image against its alpha-mixed target among the batch's B mixed
targets (gensis/losses/info_nce.py), so a student that cannot tell which target is its image's scores ln B (equal
logits), and a loss below ln B says the image carries its pair. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def late_mean(metrics_csv: Path, late: float = 0.5, column: str = "train/disentangle") -> float:
    """Mean of ``column`` over the rows whose step is in the last ``late`` share of the run's steps."""
    if not 0 < late <= 1:
        raise SystemExit(f"--late {late}: give a share of the run in (0, 1]")
    if not metrics_csv.is_file():
        raise SystemExit(f"{metrics_csv}: no such file (a finished run writes one)")
    with open(metrics_csv, newline="") as handle:
        rows = [(int(r["step"]), float(r[column])) for r in csv.DictReader(handle) if r.get(column) and r.get("step")]
    if not rows:
        raise SystemExit(f"{metrics_csv}: no {column} values (was the task on in this run?)")
    last = max(step for step, _ in rows)
    return float(np.mean([value for step, value in rows if step >= (1 - late) * last]))


def chance(run: Path) -> float | None:
    """ln B for the InfoNCE task (SimCLR) of a one-process run at batch size B, else None."""
    with open(run / "config.yaml") as handle:
        config = yaml.safe_load(handle)
    if config["ssl"]["method"] != "simclr" or str(config["trainer"]["devices"]) != "1":
        return None
    return math.log(config["data"]["batch_size"])


def finished_runs(folder: Path, seeds: list[int]) -> list[tuple[int, Path]]:
    """(seed, run folder) of the seeds whose run in a sweep setting's ``folder`` finished (``seed<k>.done.json``)."""
    return [(s, folder / f"seed{s}") for s in seeds if (folder / f"seed{s}.done.json").is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", required=True, help="quality_sweep.py setting names")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "quality_cpu_quality_bn",
                        help="quality.py's --out")
    parser.add_argument("--late", type=float, default=0.5, help="share of the run at its end to average over")
    args = parser.parse_args()
    print("| setting | seeds | task loss per seed | mean | chance (ln B) |")
    print("|---|---|---|---|---|")
    for name in args.settings:
        runs = finished_runs(args.out / "sweep" / name, args.seeds)
        if not runs:
            print(f"| {name} | - | no runs | - | - |")
            continue
        losses = [late_mean(run / "metrics.csv", args.late) for _, run in runs]
        level = chance(runs[0][1])
        print(f"| {name} | {', '.join(str(s) for s, _ in runs)} | {' / '.join(f'{v:.2f}' for v in losses)} | "
              f"{np.mean(losses):.2f} | {'-' if level is None else f'{level:.2f}'} |")


if __name__ == "__main__":
    main()
