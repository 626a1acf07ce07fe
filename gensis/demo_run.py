"""``gensis demo``: the whole pipeline on the built-in synthetic slide, ending in ``report.md``.

Steps (each one a gensis command with the ``recipe`` preset, run in this process): write the
synthetic slide, tile it, stage 1, stage 2, generate, stage 3, and ``gensis eval`` of both
encoders and of an untrained one on the tiles' known texture labels. A finished step leaves a marker in
``out/.steps`` holding its command; a killed training step resumes from its checkpoint, so a
second run finishes at once, and a run with other settings into the same ``out`` is refused.
The report shows loss curves, real tiles beside their generated views with the generator's
label fidelity and interpolation reach, an interpolation strip, and the kNN, linear and
few-shot results of the untrained encoder, stage 1 and stage 3.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from gensis.atomic import write_text
from gensis.config.demo import DemoConfig
from gensis.errors import GensisError

N_STEPS = 12
ENCODERS = ("random", "stage1", "stage3")
LABELS = {"random": "untrained", "stage1": "stage 1 (DINO)", "stage3": "stage 3 (Gen-DINO)"}


class Steps:
    """Runs the demo's steps in order, skipping those already finished."""

    def __init__(self, out: Path, recipe: str, progress: bool):
        self.out, self.recipe, self.progress = out, recipe, progress
        self.markers = out / ".steps"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.seconds: dict[str, float] = {}
        self.index = 0

    def command(self, key: str, title: str, name: str, *args: str, run_dir: Path | None = None) -> None:
        """``gensis name args...`` as step ``key``; a training command resumes in ``run_dir`` after a kill."""
        from gensis.cli import main

        self.index += 1
        marker = self.markers / f"{key}.json"
        command = [name, *args, f"experiment={self.recipe}"]
        started = self.markers / f"{key}.started.json"
        for earlier in (marker, started):
            ran = json.loads(earlier.read_text())["command"] if earlier.is_file() else command
            if ran != command:
                raise GensisError(f"out={self.out} holds a demo made with other settings (step '{key}' ran "
                                  f"'{' '.join(ran)}'); choose another out= or delete {self.out}")
        if marker.is_file():
            self.seconds[key] = json.loads(marker.read_text())["seconds"]
            print(f"[{self.index}/{N_STEPS}] {title}: done already")
            return
        print(f"[{self.index}/{N_STEPS}] {title}", flush=True)
        write_text(started, json.dumps({"command": command}))
        resume = ["resume=true"] if run_dir is not None and (run_dir / "checkpoints" / "last.ckpt").is_file() else []
        start = time.perf_counter()
        code = main([*command, f"progress={str(self.progress).lower()}", *resume])
        if code != 0:
            raise GensisError(f"step '{key}' (gensis {name}) failed with exit code {code}; fix the cause above "
                              f"and run the demo again to resume")
        self.seconds[key] = time.perf_counter() - start
        write_text(marker, json.dumps({"seconds": self.seconds[key], "command": command}))


def run(cfg: DemoConfig) -> int:
    from gensis.config.compose import experiment_presets

    presets = experiment_presets()
    if cfg.recipe not in presets:
        raise GensisError(f"recipe={cfg.recipe}: no such experiment preset; choose one of {', '.join(presets)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = Steps(out, cfg.recipe, cfg.progress)
    slide = out / "slides" / "synthetic.svs"
    tiling, views = out / "tiling", out / "views.h5"
    steps.command("slide", "synthetic slide", "synth", f"out={slide}", f"width={cfg.slide_size}",
                  f"height={cfg.slide_size}", f"mpp={cfg.slide_mpp}")
    tile = cfg.tile
    steps.command("tile", f"tiling at {tile.mpp} um/px, {tile.size} px", "tile", f"slides={slide}", f"out={tiling}",
                  *(f"tile.{f.name}={getattr(tile, f.name)}" for f in dataclasses.fields(tile)),
                  f"workers={cfg.workers}")
    steps.command("stage1", "stage 1: DINO", "stage1", f"data.path={tiling}", f"out={out / 'stage1'}",
                  run_dir=out / "stage1")
    steps.command("stage2", "stage 2: embedding-conditioned diffusion", "stage2", f"data.path={tiling}",
                  f"encoder={out / 'stage1'}", f"out={out / 'stage2'}", run_dir=out / "stage2")
    steps.command("generate", "generate: views and interpolations", "generate", f"diffusion={out / 'stage2'}",
                  f"encoder={out / 'stage1'}", f"data.path={tiling}", f"out={views}")
    steps.command("stage3", "stage 3: Gen-DINO", "stage3", f"data.path={tiling}", f"views={views}",
                  f"encoder={out / 'stage1'}", f"out={out / 'stage3'}", run_dir=out / "stage3")
    # the textures differ in colour too: in grayscale, what each encoder learnt of them shows
    for suffix, tiles, grayscale in (("", "the slide's texture labels", []),
                                     ("_gray", "the same tiles in grayscale", ["grayscale=true"])):
        for name in ENCODERS:
            encoder = "random" if name == "random" else out / name
            steps.command(f"eval_{name}{suffix}", f"eval of {name} on {tiles}", "eval", f"encoder={encoder}",
                          f"data.path={tiling}", *grayscale, f"out={out / f'eval_{name}{suffix}'}")
    report = write_report(out, steps.seconds, time.perf_counter() - started)
    print(f"\ndemo done -> {report}")
    return 0


def probe_score(scores: dict, probe: str) -> float:
    """Balanced accuracy of ``knn`` / ``linear``, or the mean of a few-shot probe (``"1"``, ``"5"``)."""
    if probe in scores:
        return scores[probe]["balanced_accuracy"]
    return scores.get("few_shot", {}).get(probe, {}).get("mean", float("nan"))


def generation_lines(path: Path) -> list[str]:
    """What the stage-2 report measured of the views: do they follow their tiles?"""
    if not path.is_file():
        return []
    g = json.loads(path.read_text())
    if "source_top10_chance" not in g:  # a report written before these measures existed
        return []
    lines = [f"Measured by stage 2's report ({g['tiles']} tiles, {g['views']} views each): a view's own tile is "
             f"among its 10 nearest real tiles for {g['source_top10']:.0%} of views (by chance "
             f"{g['source_top10_chance']:.0%}); diversity among a tile's views {g['diversity']:.3f} (hand-made "
             f"augmentations {g['diversity_augmented']:.3f}; in pixels {g['diversity_pixels']:.3f} against "
             f"{g['diversity_pixels_augmented']:.3f})."]
    if g.get("label_fidelity"):
        f = g["label_fidelity"]
        lines[0] += (f" Label fidelity {f['views']:.2f} (real held-out tiles {f['ceiling']:.2f}, a random other "
                     f"tile {f['floor']:.2f}).")
    if "interpolation_reach" in g:
        lines[0] += f" Interpolation reach {g['interpolation_reach']:.2f}."
    return [*lines, ""]


def write_report(out: Path, seconds: dict, wall: float) -> Path:
    """``report.md`` with loss curves, views, an interpolation strip and stage 1 against stage 3."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gensis.atomic import atomic_path
    from gensis.data.tile_source import open_tiles
    from gensis.evaluation.image_grid import save_png, tile_grid
    from gensis.training.run_dir import metric_points

    figures = out / "report"
    figures.mkdir(exist_ok=True)
    panels = [("stage 1 (DINO)", out / "stage1", ("train/loss",)),
              ("stage 2 (diffusion)", out / "stage2", ("train/loss",)),
              ("stage 3 (Gen-DINO)", out / "stage3", ("train/loss", "train/dino", "train/disentangle"))]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, (title, run, keys) in zip(axes, panels):
        for key in keys:
            x, y = metric_points(run / "metrics.csv", key)
            if x:
                ax.plot(x, y, label=key.removeprefix("train/"))
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(figures / "losses.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)

    tiles = open_tiles(out / "tiling")
    with h5py.File(out / "views.h5", "r") as f:
        generated = f["generated"]
        rows = min(6, generated.shape[0])
        picks = np.linspace(0, generated.shape[0] - 1, rows).astype(int)
        save_png(tile_grid([[tiles.load(int(i)), *generated[int(i)]] for i in picks], cell=64),
                 figures / "views.png")
    strip = out / "stage2" / "report" / "interpolation.png"
    if strip.is_file():
        shutil.copyfile(strip, figures / "interpolation.png")

    tasks = {"": "tiles as they are", "_gray": "the same tiles in grayscale"}
    scores = {task: {name: json.loads((out / f"eval_{name}{task}" / "metrics.json").read_text()) for name in ENCODERS}
              for task in tasks}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
    probes = [("knn", "kNN"), ("linear", "linear"), ("1", "1-shot"), ("5", "5-shot")]
    for ax, (task, title) in zip(axes, tasks.items()):
        for offset, (probe, label) in zip((-0.3, -0.1, 0.1, 0.3), probes):
            ax.bar(np.arange(len(ENCODERS)) + offset, [probe_score(scores[task][n], probe) for n in ENCODERS],
                   width=0.2, label=label)
        ax.set_xticks(range(len(ENCODERS)), [LABELS[n] for n in ENCODERS])
        ax.set_title(title)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("balanced accuracy")
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(figures / "results.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)

    table = []
    for task, title in tasks.items():
        table += [f"On {title}:", "", "| encoder | probe | balanced accuracy | macro-F1 | AUC |", "|---|---|---|---|---|"]
        for name in ENCODERS:
            for probe in ("knn", "linear"):
                s = scores[task][name][probe]
                table.append(f"| {name} | {probe} | {s['balanced_accuracy']:.3f} | {s['macro_f1']:.3f} | "
                             f"{s['auc']:.3f} |")
            for n, shot in scores[task][name].get("few_shot", {}).items():
                table.append(f"| {name} | {n}-shot (prototype, {shot['draws']} draws) | {shot['mean']:.3f} "
                             f"± {shot['std']:.3f} | | |")
        table.append("")
    generation = generation_lines(out / "stage2" / "report" / "generation.json")
    timing = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    total = sum(seconds.values())
    lines = [
        "# gensis demo", "",
        f"The pipeline on the built-in synthetic slide ({len(tiles)} tiles): tile, stage 1 (DINO), stage 2 "
        "(diffusion conditioned on stage-1 embeddings), generate (views and interpolations), stage 3 "
        "(Gen-DINO), and kNN, linear and few-shot probes of both encoders and an untrained one on the slide's "
        "known texture labels: on the tiles as they are, and in grayscale (the textures also differ in colour, "
        "which any encoder, even an untrained one, tells apart; without it, what each encoder learnt of the "
        "textures shows).", "",
        "## Results: untrained, stage 1 and stage 3", "", *table, "![results](report/results.png)", "",
        "## Loss curves", "", "![losses](report/losses.png)", "",
        "## Real tiles (first column) beside their generated views", "", "![views](report/views.png)", "",
        *generation,
    ]
    if (figures / "interpolation.png").is_file():
        lines += ["## Interpolation: drawn along alpha between two tiles", "",
                  "![interpolation](report/interpolation.png)", ""]
    lines += ["## Runs", "",
              f"- stage 1: `{out / 'stage1'}`; stage 2: `{out / 'stage2'}` (its own report in `stage2/report/`); "
              f"views: `{out / 'views.h5'}`; stage 3: `{out / 'stage3'}`",
              f"- time per step: {timing} (total {total / 60:.1f} min); this run of the demo took {wall:.0f} s", ""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path
