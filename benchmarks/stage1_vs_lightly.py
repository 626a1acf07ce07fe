"""Stage-1 training speed on CPU: gensis against lightly, method by method, same backbone, crops, batch, threads.

    python benchmarks/stage1_vs_lightly.py --setup                 # once: lightly + timm into benchmarks/.venv-lightly
    python benchmarks/stage1_vs_lightly.py DATASET_DIR [--repeat 2] [--methods dino mocov3 byol simclr] \
        [--precision 32 bf16]

Both train a 4-layer ViT-Tiny (patch 8, 192-d) on the same image folder, one after the other,
batch 32, 2 DataLoader workers, 2 torch threads; steady-state images/s after warm-up steps.
DINO: a 65,536-output DINO head on 2 x 64 px global + 4 x 32 px local crops (lightly_dino_driver.py).
MoCo v3, BYOL, SimCLR: heads of width 2,048 and output 256 on two 64 px views
(``ssl.method=... crops.n_local=0``; lightly_siamese_driver.py).
``--precision bf16`` runs both sides' forward passes under CPU autocast to bfloat16 (gensis:
``trainer.precision=bf16-mixed``; lightly: ``torch.autocast`` around its forward and loss); several
precisions make one row per method and precision.
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
SIAMESE = ("mocov3", "byol", "simclr")


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
    parser.add_argument("--methods", nargs="+", default=["dino"], choices=["dino", *SIAMESE])
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16"],
                        help="forward precision of both sides (bf16: CPU autocast to bfloat16)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "stage1_vs_lightly.json")
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    if args.dataset is None:
        parser.error("give the dataset folder (class subfolders of images)")
    results = [compare(method, args.dataset, args.repeat, args.steps, precision)
               for method in args.methods for precision in args.precision]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"| method | precision | gensis images/s (median of {args.repeat}) | lightly images/s | gensis / lightly |\n"
          "|---|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['precision']} | {r['gensis_images_per_s']:.1f} | "
              f"{r['lightly_images_per_s']:.1f} | {r['ratio']:.2f}x |")


def compare(method: str, dataset: Path, repeat: int, steps: int, precision: str) -> dict:
    """``repeat`` alternating runs of gensis and lightly training ``method`` at ``precision``; medians and
    their ratio."""
    gensis_cmd = [sys.executable, str(ROOT / "benchmarks" / "stage1_throughput.py"), "--data", str(dataset),
                  "--steps", str(steps), "--warmup", "5", "--batch", "32", "--workers", "2",
                  f"trainer.precision={'bf16-mixed' if precision == 'bf16' else '32-true'}"]
    lightly_cmd = [str(VENV / "bin" / "python"), "--data", str(dataset), "--steps", str(steps), "--warmup", "5",
                   "--precision", precision]
    if method == "dino":
        lightly_cmd.insert(1, str(ROOT / "benchmarks" / "lightly_dino_driver.py"))
    else:
        gensis_cmd += [f"ssl.method={method}", "crops.n_local=0", "ssl.hidden_dim=2048", "ssl.out_dim=256"]
        lightly_cmd[1:1] = [str(ROOT / "benchmarks" / "lightly_siamese_driver.py"), "--method", method]
    runs = {"gensis": [], "lightly": []}
    for _ in range(repeat):
        out = subprocess.run(gensis_cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        runs["gensis"].append(last_json(out.stdout)["images_per_s"])
        out = subprocess.run(lightly_cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        runs["lightly"].append(last_json(out.stdout)["images_per_s"])
        print(f"{method} {precision}: gensis {runs['gensis'][-1]:.1f} img/s, lightly {runs['lightly'][-1]:.1f} img/s", flush=True)
    gensis, lightly = statistics.median(runs["gensis"]), statistics.median(runs["lightly"])
    return {"method": method, "precision": precision, "runs": runs, "gensis_images_per_s": gensis,
            "lightly_images_per_s": lightly, "ratio": gensis / lightly}

if __name__ == "__main__":
    main()
