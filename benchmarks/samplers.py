"""Samplers of the stage-2 model: views per second and fidelity for DDIM and DPM-Solver++.

    python benchmarks/samplers.py [--encoder RUN] [--train TILES] [--test TILES] [--out benchmarks/out/samplers]

Trains (once; resumable) a CPU-scale stage-2 model (``experiment=cpu_small``: 32 px, pixel
space) on the training tiles, conditioned on a stage-1 encoder, by default the cpu_small
encoder and split that the stage-1-only ``benchmarks/quality.py`` (commit 2360db0) made on
``lc25000_lung_dev`` (``--encoder``, ``--train`` and ``--test`` take others). Then, on the
same held-out tiles and the same noise seeds, draws views with DDIM 10/25/50 and
DPM-Solver++ 10/20 at guidance 1, 2 and 3, and reports views/s (drawing only, 2 threads)
and fidelity (mean cosine between a tile's embedding and its views' embeddings) beside
the hand-augmented reference and the random-tile floor. Writes samplers.json, samplers.md
and samplers.png; picks the default: the best fidelity among settings at least 2.5x as
fast as DDIM-50 at the same guidance.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUALITY = ROOT / "benchmarks" / "out" / "quality" / "seed0"
SETTINGS = [("ddim", 10), ("ddim", 25), ("ddim", 50), ("dpm++", 10), ("dpm++", 20)]
GUIDANCE = [1.0, 2.0, 3.0]


def train(args) -> Path:
    run = args.out / "stage2"
    if (run / "stage2_done.json").is_file():
        return run
    resume = ["resume=true"] if (run / "checkpoints" / "last.ckpt").is_file() else []
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gensis", "stage2", f"data.path={args.train}", f"encoder={args.encoder}",
                    f"out={run}", "experiment=cpu_small", "progress=false", *resume, *args.overrides],
                   check=True, cwd=ROOT)
    (run / "stage2_done.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", type=Path, default=QUALITY / "stage1")
    parser.add_argument("--train", type=Path, default=QUALITY / "train")
    parser.add_argument("--test", type=Path, default=QUALITY / "test")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "samplers")
    parser.add_argument("--tiles", type=int, default=64, help="held-out tiles to draw from")
    parser.add_argument("--views", type=int, default=2, help="views per tile")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra stage2 key=value overrides")
    args = parser.parse_args()
    if not (args.encoder / "encoder.json").is_file():
        sys.exit(f"{args.encoder}: no stage-1 encoder; run benchmarks/quality.py on lc25000_lung_dev first "
                 f"(or pass --encoder, --train and --test)")
    run = train(args)

    import torch

    from gensis.config.augment import AugmentConfig, blur_sigma_range
    from gensis.config.diffusion import SamplerConfig
    from gensis.data.augment import augmented_view, eval_transform
    from gensis.data.tile_source import open_tiles
    from gensis.diffusion.pipeline import load_pipeline, make_scheduler
    from gensis.evaluation.generation_quality import draw, embed_images
    from gensis.models.backbone import load_encoder

    torch.set_num_threads(args.threads)
    pipe, info = load_pipeline(run)
    training_scheduler = pipe.scheduler.config
    model, spec = load_encoder(args.encoder)
    device = torch.device("cpu")
    tiles = open_tiles(args.test)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(tiles), min(args.tiles, len(tiles)), replace=False)
    real = [tiles[int(i)]["image"] for i in picked]
    plain = eval_transform(spec.img_size, spec.mean, spec.std)
    e = embed_images(model, real, plain, device)
    k, n = args.views, len(real)
    torch.manual_seed(0)
    augment = augmented_view(spec.img_size, (0.4, 1.0), AugmentConfig(), 0.5, 0.0, spec.mean, spec.std,
                             blur_sigma_range(spec.img_size))
    augmented = embed_images(model, [a for a in real for _ in range(k)], augment, device).reshape(n, k, -1)
    others = (np.arange(n) + rng.integers(1, n, size=n)) % n
    reference = float(np.einsum("td,tkd->tk", e, augmented).mean())
    floor = float((e * e[others]).sum(-1).mean())
    conditions, seeds = np.repeat(e, k, axis=0), np.arange(n * k)
    draw(pipe, conditions[:2], seeds[:2], SamplerConfig("ddim", 2, 2.0), args.batch)   # warm-up
    rows = []
    for guidance in GUIDANCE:
        for name, steps in SETTINGS:
            pipe.scheduler = make_scheduler(name, training_scheduler)
            sampler = SamplerConfig(name, steps, guidance)
            start = time.perf_counter()
            views = draw(pipe, conditions, seeds, sampler, args.batch)
            seconds = time.perf_counter() - start
            generated = embed_images(model, views, plain, device).reshape(n, k, -1)
            fidelity = float(np.einsum("td,tkd->tk", e, generated).mean())
            rows.append({"sampler": name, "steps": steps, "guidance": guidance, "views_per_s": n * k / seconds,
                         "fidelity": fidelity})
            print(f"{name:6s} {steps:3d} steps  guidance {guidance}: {n * k / seconds:6.2f} views/s, "
                  f"fidelity {fidelity:.4f}", flush=True)
    result = {"model": info, "tiles": n, "views": k, "threads": args.threads, "batch": args.batch,
              "fidelity_augmented": reference, "fidelity_floor": floor, "rows": rows,
              "default": choose_default(rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "samplers.json").write_text(json.dumps(result, indent=2))
    (args.out / "samplers.md").write_text(markdown(result) + "\n")
    plot(result, args.out / "samplers.png")
    print(markdown(result))


def ddim50(rows: list[dict], guidance: float) -> dict:
    return next(r for r in rows if r["sampler"] == "ddim" and r["steps"] == 50 and r["guidance"] == guidance)


def choose_default(rows: list[dict]) -> dict:
    """Best fidelity among the settings at least 2.5x as fast as DDIM-50 at the same guidance."""
    fast = [r for r in rows if r["views_per_s"] >= 2.5 * ddim50(rows, r["guidance"])["views_per_s"]]
    best = max(fast, key=lambda r: r["fidelity"])
    reference = ddim50(rows, best["guidance"])
    return {**best, "speedup_vs_ddim50": best["views_per_s"] / reference["views_per_s"],
            "fidelity_vs_ddim50": best["fidelity"] - reference["fidelity"],
            "goal_met": best["fidelity"] >= reference["fidelity"] - 0.01}


def markdown(result: dict) -> str:
    lines = ["| sampler | steps | guidance | views/s | fidelity | vs DDIM-50 (same guidance) |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ref = ddim50(result["rows"], r["guidance"])
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | {r['views_per_s']:.2f} | "
                     f"{r['fidelity']:.4f} | {r['views_per_s'] / ref['views_per_s']:.2f}x, "
                     f"{r['fidelity'] - ref['fidelity']:+.4f} |")
    d = result["default"]
    lines += ["", f"Hand-augmented reference {result['fidelity_augmented']:.4f}, random-tile floor "
              f"{result['fidelity_floor']:.4f}, midpoint "
              f"{(result['fidelity_augmented'] + result['fidelity_floor']) / 2:.4f}.",
              f"Default: {d['sampler']} {d['steps']} steps, guidance {d['guidance']:g}: "
              f"{d['speedup_vs_ddim50']:.2f}x DDIM-50's views/s, fidelity {d['fidelity_vs_ddim50']:+.4f} "
              f"({'goal met' if d['goal_met'] else 'goal missed'})."]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, steps), marker in zip(SETTINGS, "os^Dv"):
        rows = [r for r in result["rows"] if r["sampler"] == name and r["steps"] == steps]
        ax.plot([r["views_per_s"] for r in rows], [r["fidelity"] for r in rows], marker=marker, ls=":",
                label=f"{name} {steps}")
        for r in rows:
            ax.annotate(f"g{r['guidance']:g}", (r["views_per_s"], r["fidelity"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.axhline(result["fidelity_augmented"], color="green", ls="--", lw=1, label="hand-augmented view")
    ax.axhline(result["fidelity_floor"], color="red", ls="--", lw=1, label="random other tile")
    ax.set_xscale("log")
    ax.set_xlabel("views / s (2 CPU threads)")
    ax.set_ylabel("fidelity (cosine to the tile's embedding)")
    ax.set_title("stage-2 samplers at CPU scale")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
