"""Stage-1 training speed on CPU: gensis against lightly's DINO, same backbone, crops, batch and threads.

    python benchmarks/stage1_vs_lightly.py --setup                 # once: lightly + timm into benchmarks/.venv-lightly
    python benchmarks/stage1_vs_lightly.py DATASET_DIR [--repeat 2]

Both train a 4-layer ViT-Tiny (patch 8, 192-d) with a 65,536-output DINO head on 2 x 64 px
global + 4 x 32 px local crops, batch 32, 2 DataLoader workers, 2 torch threads, on the
same image folder, one after the other; steady-state images/s after warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "benchmarks" / ".venv-lightly"


def setup() -> None:
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "lightly==1.6.0", "timm"],
                   check=True)


def last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path)
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "stage1_vs_lightly.json")
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    if args.dataset is None:
        parser.error("give the dataset folder (class subfolders of images)")
    runs = {"gensis": [], "lightly": []}
    for _ in range(args.repeat):
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stage1_throughput.py"), "--data",
                              str(args.dataset), "--steps", str(args.steps), "--warmup", "5", "--batch", "32",
                              "--workers", "2"], capture_output=True, text=True, check=True, cwd=ROOT)
        runs["gensis"].append(last_json(out.stdout)["images_per_s"])
        out = subprocess.run([str(VENV / "bin" / "python"), str(ROOT / "benchmarks" / "lightly_dino_driver.py"),
                              "--data", str(args.dataset), "--steps", str(args.steps), "--warmup", "5"],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        runs["lightly"].append(last_json(out.stdout)["images_per_s"])
        print(f"gensis {runs['gensis'][-1]:.1f} img/s, lightly {runs['lightly'][-1]:.1f} img/s", flush=True)
    gensis, lightly = statistics.median(runs["gensis"]), statistics.median(runs["lightly"])
    result = {"runs": runs, "gensis_images_per_s": gensis, "lightly_images_per_s": lightly, "ratio": gensis / lightly}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"| tool | images/s (median of {args.repeat}) |\n|---|---|\n| gensis | {gensis:.1f} |\n| lightly | {lightly:.1f} |")
    print(f"gensis / lightly = {gensis / lightly:.2f}x")


if __name__ == "__main__":
    main()
