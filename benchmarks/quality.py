"""Encoder quality of the whole pipeline on a labeled tile dataset (class subfolders, optional groups.csv).

    python benchmarks/quality.py DATASET_DIR [--recipe cpu_quality_bn] [--seeds 0 1 2 3 4] [--out DIR]
                                 [--stage3 gen.p=0.5 disentangle.weight=1.0 ...] [--stage2 train.epochs=6 ...]
    python benchmarks/quality.py DATASET_DIR --seeds 5 6          # more seeds later: merged into quality.json
    python benchmarks/quality.py DATASET_DIR --recipe gpu_quality --autoencoder --px 224 --ssl-tiles 0

1. Split the tiles into train and test BY GROUP (groups.csv; by tile otherwise) with
   ``--split-seed``, resized once to ``--px`` PNG folders; the self-supervised stages see
   ``--ssl-tiles`` training tiles (all, with 0), labels never.
2. Once per split: stage 1 with ``--generator-seed`` (none of the compared seeds, so that no
   compared run is the generator's own encoder) -> stage 2 on its embeddings (with ``--stage2``'s overrides,
   e.g. ``train.epochs=6``) -> generate.
3. Per seed, with the same epochs, steps and schedules: stage 1, a compute-matched stage-1
   control (``--control-factor`` times the epochs: stage 3 costs about that much more per
   step), stage 3 (Gen-DINO) and the two ablations (no disentanglement:
   ``disentangle.weight=0``; no generated views: ``gen.p=0``).
4. ``gensis eval`` every encoder and an untrained one (kNN, linear probe and few-shot
   prototypes with 1, 5, 10 and 25 tiles per class, 100 draws each): balanced accuracy,
   macro-F1 and AUC, mean and spread over seeds, and the gains over stage 1 and over the
   control paired by seed with 95% t-intervals.

Seeds may be trained by separate invocations (``--seeds``): each merges its seeds into quality.json
under a lock (the other settings must be the same). Once one invocation has made the split and the
generator (steps 1-2), others may run side by side; before that, run one alone. Writes quality.json,
quality.md (tables) and quality.png (plot) in ``--out``. Every step is resumable: run the same
command again after a kill.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gensis.atomic import write_text  # noqa: E402
from gensis.data.tile_source import ImageFolderTiles  # noqa: E402
from gensis.evaluation.split import train_test_split  # noqa: E402

VARIANTS = {"stage3": [], "stage3_no_disentangle": ["disentangle.weight=0"], "stage3_no_generated": ["gen.p=0"]}
ENCODERS = ["random", "stage1", "stage1_control", *VARIANTS]
FEW_SHOT = ("few_shot_1", "few_shot_5", "few_shot_10", "few_shot_25")
METRICS = ("balanced_accuracy", "macro_f1", "auc")


def gensis(*args: str) -> float:
    """Run a gensis command; returns its wall-clock seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gensis", *args, "progress=false"], check=True, cwd=ROOT)
    return time.perf_counter() - start


def once(marker: Path, work) -> float:
    """Run ``work()`` (returns seconds) unless ``marker`` says it finished; the marker keeps the seconds."""
    if marker.is_file():
        return json.loads(marker.read_text())["seconds"]
    seconds = work()
    write_text(marker, json.dumps({"seconds": seconds}))   # atomic: another invocation may be reading it
    return seconds


@contextmanager
def locked(path: Path):
    """Hold an exclusive lock on ``.<name>.lock`` beside ``path``: invocations running side by side then read,
    merge and write ``path`` one at a time."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_json(path: Path, merge) -> dict:
    """Under the lock, read ``path`` (``{}`` if absent), write ``merge(stored)`` to it atomically and return it."""
    with locked(path):
        stored = json.loads(path.read_text()) if path.is_file() else {}
        merged = merge(stored)
        write_text(path, json.dumps(merged, indent=2))
    return merged


def save_entry(results_json: Path, name: str, entry: dict) -> dict:
    """Write ``entry`` as ``name`` in ``results_json`` (atomically), keeping the seeds and seconds that other
    invocations (other seeds of the same setting) wrote meanwhile; returns the file's new contents."""
    def merge(results: dict) -> dict:
        stored = results.get(name, {})
        for key in ("seeds", "seconds"):
            entry[key] = {**stored.get(key, {}), **entry[key]}
        return {**results, name: entry}

    return merge_json(results_json, merge)


def changed_settings(stored: dict, settings: dict) -> list[str]:
    """The keys of ``settings`` that an existing quality.json (``stored``; empty: none yet) holds other values
    for. A file made before ``--stage2`` existed has the default generator: no stage-2 overrides."""
    if not stored:
        return []
    stored = {"stage2_overrides": [], **stored}
    return [k for k in settings if stored.get(k) != settings[k]]


def save_results(quality_json: Path, own: dict, elapsed: float) -> dict:
    """Merge one invocation's settings, seeds' scores and seconds (``own``) into ``quality_json`` (atomically),
    keeping what other invocations wrote meanwhile (their seeds, their per-seed seconds) and adding ``elapsed``
    to ``wall_seconds`` (summed over invocations, so more than the wall clock when they overlap). Returns the
    merged results."""
    def merge(stored: dict) -> dict:
        changed = changed_settings(stored, {k: v for k, v in own.items() if k not in ("seeds", "seconds")})
        if changed:
            raise SystemExit(f"{quality_json} was made meanwhile with other settings ({', '.join(changed)}); "
                             f"give another --out")
        seconds = dict(stored.get("seconds", {}))
        for key, value in own["seconds"].items():
            both = isinstance(value, dict) and isinstance(seconds.get(key), dict)
            seconds[key] = {**seconds[key], **value} if both else value
        return {**stored, **own, "seconds": seconds, "seeds": {**stored.get("seeds", {}), **own["seeds"]},
                "wall_seconds": stored.get("wall_seconds", 0.0) + elapsed}

    return merge_json(quality_json, merge)


def train(command: str, run: Path, *args: str) -> float:
    """A training command into ``run`` that resumes from its checkpoint after a kill."""
    def work():
        resume = ["resume=true"] if (run / "checkpoints" / "last.ckpt").is_file() else []
        return gensis(command, f"out={run}", *args, *resume)

    run.parent.mkdir(parents=True, exist_ok=True)
    return once(run.parent / f"{run.name}.done.json", work)


def write_split(dataset: Path, tiles: ImageFolderTiles, indices, target: Path, px: int) -> None:
    """Resized PNG copies of ``indices`` (class subfolders kept) and their groups.csv rows."""
    from PIL import Image

    if (target / "groups.csv").is_file():
        return
    rows = []
    for i in indices:
        key = tiles.keys[i]
        path = target / Path(key).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(dataset / key) as image:
            image.convert("RGB").resize((px, px), Image.Resampling.BICUBIC).save(path)
        group = tiles.groups[i] if tiles.groups is not None else key
        rows.append({"file": str(Path(key).with_suffix(".png")), "label": tiles.classes[tiles.labels[i]],
                     "group": group})
    with open(target / "groups.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)


def prepare_split(dataset: Path, data: Path, split_seed: int, test_fraction: float, ssl_tiles: int, px: int) -> dict:
    """``data/train``, ``data/test`` (split by group) and ``data/ssl`` (``ssl_tiles`` of train; 0: all) at ``px``."""
    tiles = ImageFolderTiles(dataset, labels=True)
    train_idx, test_idx = train_test_split(tiles.labels, tiles.groups, test_fraction, split_seed)
    rng = np.random.default_rng(split_seed)
    ssl_idx = (np.sort(rng.choice(train_idx, ssl_tiles, replace=False))
               if 0 < ssl_tiles < len(train_idx) else np.sort(train_idx))
    for name, indices in (("train", train_idx), ("test", test_idx), ("ssl", ssl_idx)):
        write_split(dataset, tiles, indices, data / name, px)
    return {"n_tiles": len(tiles), "classes": tiles.classes,
            "split": "by group" if tiles.groups is not None else "stratified by tile",
            "n_train": len(train_idx), "n_test": len(test_idx), "n_ssl": len(ssl_idx)}


def evaluate(encoder: str, out: Path, data: Path, recipe: str, seed: int) -> dict:
    if not (out / "metrics.json").is_file():
        gensis("eval", f"encoder={encoder}", f"data.train={data / 'train'}", f"data.test={data / 'test'}",
               f"out={out}", f"experiment={recipe}", f"seed={seed}", "data.workers=2")
    scores = json.loads((out / "metrics.json").read_text())
    result = {probe: {key: scores[probe][key] for key in METRICS} for probe in ("knn", "linear")}
    for n, value in scores.get("few_shot", {}).items():
        result[f"few_shot_{n}"] = {"balanced_accuracy": value["mean"]}
    return result


def recipe_epochs(recipe: str) -> int:
    """optim.epochs of stage 1 under ``recipe``."""
    from gensis.cli import _all_blocks
    from gensis.config.compose import compose_config
    from gensis.config.stage1 import Stage1Config

    cfg = compose_config("stage1", Stage1Config, [f"experiment={recipe}", "data.path=.", "out=."],
                         other_blocks=_all_blocks())
    return cfg.optim.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--recipe", default="cpu_quality_bn", help="experiment preset of every command")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="seeds to train now; results of earlier invocations (other seeds) are kept and merged")
    parser.add_argument("--generator-seed", type=int, default=1000,
                        help="seed of the stage-1 encoder stage 2 is conditioned on: none of the compared seeds")
    parser.add_argument("--control-factor", type=float, default=1.4,
                        help="the compute-matched stage-1 control trains this many times the recipe's epochs "
                             "(stage 3 costs about as much more per step; compare the seconds in quality.json)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--px", type=int, default=64, help="tiles are resized once to this size")
    parser.add_argument("--ssl-tiles", type=int, default=1500, help="training tiles the SSL stages see (0: all)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/out/quality_<recipe>")
    parser.add_argument("--stage2", nargs="*", default=[], help="extra stage2 key=value overrides (the generator)")
    parser.add_argument("--stage3", nargs="*", default=[], help="extra stage3 key=value overrides (all variants)")
    parser.add_argument("--generate", nargs="*", default=[], help="extra generate key=value overrides")
    parser.add_argument("--autoencoder", action="store_true",
                        help="latent-space stage 2: train gensis autoencoder on the SSL tiles first (GPU recipe)")
    parser.add_argument("--autoencoder-epochs", type=int, default=10)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="stage-3 runs per seed (default: stage 3 and both ablations; none: only stage 1 "
                             "and its control, e.g. as the base of a quality_sweep.py of other settings)")
    args = parser.parse_args()
    if args.generator_seed in args.seeds:
        raise SystemExit(f"--generator-seed {args.generator_seed} is one of --seeds: the generator's encoder must "
                         f"not be one of the compared runs")
    out = args.out or ROOT / "benchmarks" / "out" / f"quality_{args.recipe}"
    data = out / "data"
    started = time.perf_counter()

    split = prepare_split(args.dataset, data, args.split_seed, args.test_fraction, args.ssl_tiles, args.px)
    recipe = f"experiment={args.recipe}"
    settings = {"dataset": args.dataset.name, "recipe": args.recipe, **split, "split_seed": args.split_seed,
                "generator_seed": args.generator_seed, "control_factor": args.control_factor,
                "stage2_overrides": args.stage2, "stage3_overrides": args.stage3, "generate_overrides": args.generate}
    quality_json = out / "quality.json"
    stored = json.loads(quality_json.read_text()) if quality_json.is_file() else {}
    changed = changed_settings(stored, settings)
    if changed:
        raise SystemExit(f"{quality_json} was made with other settings ({', '.join(changed)}); give another --out")
    own = {**settings, "seconds": {}, "seeds": {}}   # this invocation's: merged into quality.json at each write

    seconds = own["seconds"]
    generator = out / "generator"
    conditioning = generator / "stage1"
    seconds["generator_stage1"] = train("stage1", conditioning, f"data.path={data / 'ssl'}", recipe,
                                        f"seed={args.generator_seed}")
    latent = []
    if args.autoencoder:
        seconds["autoencoder"] = train("autoencoder", generator / "autoencoder", f"data.path={data / 'ssl'}", recipe,
                                       f"seed={args.split_seed}", f"train.epochs={args.autoencoder_epochs}")
        latent = [f"generator.vae={generator / 'autoencoder' / 'vae'}"]
    seconds["stage2"] = train("stage2", generator / "stage2", f"data.path={data / 'ssl'}", f"encoder={conditioning}",
                              recipe, f"seed={args.split_seed}", *latent, *args.stage2)
    views = generator / "views.h5"
    seconds["generate"] = once(generator / "views.done.json", lambda: gensis(
        "generate", f"diffusion={generator / 'stage2'}", f"encoder={conditioning}",
        f"data.path={data / 'ssl'}", f"out={views}", recipe, f"seed={args.split_seed}", *args.generate))
    random_scores = evaluate("random", out / "eval_random", data, args.recipe, args.split_seed)
    control_epochs = max(1, round(recipe_epochs(args.recipe) * args.control_factor))
    results = save_results(quality_json, own, time.perf_counter() - started)
    started = time.perf_counter()

    for seed in args.seeds:
        run = out / f"seed{seed}"
        seconds.setdefault("stage1", {})[str(seed)] = train("stage1", run / "stage1", f"data.path={data / 'ssl'}",
                                                             recipe, f"seed={seed}")
        seconds.setdefault("stage1_control", {})[str(seed)] = train(
            "stage1", run / "stage1_control", f"data.path={data / 'ssl'}", recipe, f"seed={seed}",
            f"optim.epochs={control_epochs}")
        for variant in args.variants:
            overrides = VARIANTS[variant]
            seconds.setdefault(variant, {})[str(seed)] = train(
                "stage3", run / variant, f"data.path={data / 'ssl'}", f"views={views}",
                f"encoder={conditioning}", recipe, f"seed={seed}",
                *args.stage3, *overrides)
        scores = {"random": random_scores}
        for name in ("stage1", "stage1_control", *args.variants):
            scores[name] = evaluate(str(run / name), run / f"eval_{name}", data, args.recipe, seed)
        own["seeds"][str(seed)] = scores
        results = save_results(quality_json, own, time.perf_counter() - started)
        started = time.perf_counter()
    summarise(results, out)


def values(results: dict, name: str, probe: str, key: str) -> np.ndarray:
    return np.array([s[name][probe][key] if probe in s[name] else np.nan for s in results["seeds"].values()],
                    float)


def cell(v: np.ndarray, signed: bool = False) -> str:
    mean = f"{v.mean():+.3f}" if signed else f"{v.mean():.3f}"
    return mean + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")


def t_interval(d: np.ndarray) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t-interval, mean +/- t(0.975, n - 1) s / sqrt(n) (one value: the
    mean three times)."""
    mean = float(np.mean(d))
    if len(d) < 2:
        return mean, mean, mean
    from scipy.stats import t

    half = float(t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d)))
    return mean, mean - half, mean + half


def interval(d: np.ndarray) -> str:
    """Mean and 95% t-interval of paired differences, as text."""
    mean, low, high = t_interval(d)
    return f"{mean:+.3f}" if len(d) < 2 else f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def summarise(results: dict, out: Path) -> None:
    present = [n for n in ENCODERS if all(n in s for s in results["seeds"].values())]
    rows = ["| encoder | kNN bal. acc | kNN macro-F1 | kNN AUC | linear bal. acc | linear macro-F1 | linear AUC |",
            "|---|---|---|---|---|---|---|"]
    for name in present:
        rows.append(f"| {name} | " + " | ".join(cell(values(results, name, p, k)) for p in ("knn", "linear")
                                                 for k in METRICS) + " |")
    probes = ("knn", "linear", *FEW_SHOT)
    rows += ["", f"Balanced accuracy gains paired by seed ({len(results['seeds'])} seeds): mean [95% t-interval]", "",
             "| comparison | " + " | ".join(p.replace("_", " ") for p in probes) + " |",
             "|---|" + "---|" * len(probes)]
    comparisons = [*((v, "stage1") for v in ("stage1_control", *VARIANTS)), ("stage3", "stage1_control")]
    for name, reference in [(a, b) for a, b in comparisons if a in present and b in present]:
        gains = [interval(values(results, name, p, "balanced_accuracy") - values(results, reference, p,
                                                                                  "balanced_accuracy"))
                 for p in probes]
        rows.append(f"| {name} - {reference} | " + " | ".join(gains) + " |")
    table = "\n".join(rows)
    (out / "quality.md").write_text(table + "\n")
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(present))
    for offset, probe in ((-0.2, "knn"), (0.2, "linear")):
        v = [values(results, n, probe, "balanced_accuracy") for n in present]
        ax.bar(x + offset, [a.mean() for a in v], width=0.4, label=probe, capsize=3,
               yerr=[a.std(ddof=1) if len(a) > 1 else 0 for a in v])
        for i, a in enumerate(v):
            ax.scatter(np.full(len(a), i + offset), a, color="black", s=8, zorder=3)
    low = min(values(results, n, p, "balanced_accuracy").min() for n in present for p in ("knn", "linear"))
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_xticks(x, [n.replace("stage3_", "stage3\n").replace("stage1_", "stage1\n") for n in present])
    ax.set_ylabel("balanced accuracy")
    ax.set_title(f"{results['dataset']} ({results['recipe']}, {len(results['seeds'])} seed(s); dots: seeds)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=100)


if __name__ == "__main__":
    main()
