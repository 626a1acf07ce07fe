"""What moves stage 3's gain: extra settings trained on the quality benchmark's split and seeds.

    python benchmarks/quality_sweep.py --recipe cpu_quality_2h --seeds 0 1 2 \\
        --setting p025 gen.p=0.25 \\
        --setting weight2 disentangle.weight=2 \\
        --setting guidance2 generate:sampler.guidance=2 \\
        --setting stage1_16ep stage1 optim.epochs=16

Run after ``benchmarks/quality.py`` (same ``--recipe`` / ``--out``): it reuses that run's tile
split, views store and per-seed stage-1 runs. Each ``--setting NAME [stage1|stage3] KEY=VALUE ...``
trains one encoder per seed into ``OUT/sweep/NAME/seed<k>`` (stage 3 by default; ``stage1`` makes a
stage-1 control, e.g. one with as much compute as stage 3). Overrides written ``generate:KEY=VALUE``
draw the setting's own views store first (``OUT/sweep/NAME/views.h5``, once per split) with
those generate overrides; a ``views=PATH`` override (an absolute path, or one relative to the
repository root) trains on that store instead (e.g. one of benchmarks/interp_controls.py's, or one
drawn by a longer-trained stage 2). ``{seed}`` in an override stands for the seed being trained, e.g.
``init=benchmarks/out/quality_cpu_quality_bn/sweep/simclr_stage1/seed{seed}`` starts each seed from its own
stage-1 run. Every encoder is evaluated like quality.py's; the table gives each
setting's kNN and linear balanced accuracy and its gain over stage 1 paired by seed, beside
quality.py's own stage 3 for reference. ``--compare A B`` adds B's gains over A paired by seed, with 95%
t-intervals, for kNN, linear and few-shot probes (A, B: setting names, or quality.py's ``stage1``,
``stage1_control``, ``stage3``), e.g. a method's stage 3 against that method's stage 1 and control:

    python benchmarks/quality_sweep.py --seeds 0 1 2 --setting simclr_stage1 stage1 ssl.method=simclr \
        --setting simclr_stage3 ssl.method=simclr --compare simclr_stage1 simclr_stage3

Writes sweep.json and sweep.md in OUT (with ``--compare``, also sweep_compare.png: each comparison's gain
and interval for kNN, linear and 10-shot, against 0 and, over stage 1, the +0.02 kNN goal); resumable.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from quality import FEW_SHOT, ROOT, cell, evaluate, gensis, interval, once, save_entry, t_interval, train


def parse_setting(tokens: list[str]) -> dict:
    """``NAME [stage1|stage3] KEY=VALUE ... generate:KEY=VALUE ...`` as a dict."""
    name, rest = tokens[0], tokens[1:]
    command = "stage3"
    if rest and rest[0] in ("stage1", "stage3"):
        command, rest = rest[0], rest[1:]
    bad = [t for t in rest if "=" not in t]
    if "=" in name or bad:
        raise SystemExit(f"--setting {' '.join(tokens)}: give a name, then KEY=VALUE overrides "
                         f"(not {bad or [name]})")
    generate = [t.removeprefix("generate:") for t in rest if t.startswith("generate:")]
    if generate and command != "stage3":
        raise SystemExit(f"--setting {name}: generate: overrides only make sense for stage 3")
    if generate and any(t.startswith("views=") for t in rest):
        raise SystemExit(f"--setting {name}: give either generate: overrides (the setting draws its own store) "
                         f"or views=PATH (a store of your own), not both")
    return {"name": name, "command": command, "generate": generate,
            "overrides": [t for t in rest if not t.startswith("generate:")]}


def for_seed(overrides: list[str], seed: int) -> list[str]:
    """The overrides with ``{seed}`` replaced by the seed trained (the setting keeps the template)."""
    return [o.replace("{seed}", str(seed)) for o in overrides]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cpu_quality_bn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="quality.py's --out (default: its default)")
    parser.add_argument("--setting", nargs="+", action="append", required=True, metavar="TOKEN")
    parser.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
                        help="also table B - A paired by seed (setting names or quality.py's stage1, "
                             "stage1_control, stage3)")
    args = parser.parse_args()
    out = args.out or ROOT / "benchmarks" / "out" / f"quality_{args.recipe}"
    quality = out / "quality.json"
    if not quality.is_file():
        raise SystemExit(f"{quality} not found: run benchmarks/quality.py --recipe {args.recipe} first")
    base = json.loads(quality.read_text())
    missing = [s for s in args.seeds if str(s) not in base["seeds"]]
    if missing:
        raise SystemExit(f"seeds {missing} are not in {quality}: run quality.py with them first")
    settings = [parse_setting(tokens) for tokens in args.setting]
    data, recipe = out / "data", f"experiment={args.recipe}"
    from omegaconf import OmegaConf

    conditioning = OmegaConf.load(out / "generator" / "stage2" / "config.yaml").encoder  # stage 2's stage-1 encoder
    sweep_json = out / "sweep.json"
    results = json.loads(sweep_json.read_text()) if sweep_json.is_file() else {}

    for setting in settings:
        name = setting["name"]
        folder = out / "sweep" / name
        folder.mkdir(parents=True, exist_ok=True)
        views = out / "generator" / "views.h5"
        entry = results.get(name, {**setting, "seconds": {}, "seeds": {}})
        if {k: entry[k] for k in setting} != setting:
            raise SystemExit(f"--setting {name}: {out / 'sweep' / name} was trained with other settings "
                             f"({entry['command']} {' '.join(entry['overrides'])} "
                             f"{' '.join('generate:' + g for g in entry['generate'])}); choose another name")
        if setting["generate"]:
            views = folder / "views.h5"
            entry["seconds"]["generate"] = once(folder / "views.done.json", lambda: gensis(
                "generate", f"diffusion={out / 'generator' / 'stage2'}", f"encoder={conditioning}",
                f"data.path={data / 'ssl'}", f"out={views}", recipe, f"seed={base.get('split_seed', 0)}",
                *base.get("generate_overrides", []), *setting["generate"]))
        for seed in args.seeds:
            run = folder / f"seed{seed}"
            own_views = any(o.startswith("views=") for o in setting["overrides"])  # a store of the setting's own
            extra = [*([] if own_views else [f"views={views}"]), *base["stage3_overrides"]] \
                if setting["command"] == "stage3" else []
            entry["seconds"][str(seed)] = train(setting["command"], run, f"data.path={data / 'ssl'}", *extra,
                                                recipe, f"seed={seed}", *for_seed(setting["overrides"], seed))
            entry["seeds"][str(seed)] = evaluate(str(run), folder / f"eval_seed{seed}", data, args.recipe, seed)
            # another sweep (other settings, or other seeds of this one) may have written meanwhile
            results = save_entry(sweep_json, name, entry)
    summarise(base, results, out, [str(s) for s in args.seeds], args.compare)


def scores_of(name: str, base: dict, results: dict, seed: str) -> dict:
    """Probe scores of a setting, or of one of quality.py's encoders, for ``seed``."""
    return results[name]["seeds"][seed] if name in results else base["seeds"][seed][name]


PROBES = ["knn", "linear", *FEW_SHOT]


def paired_gains(base: dict, results: dict, seeds: list[str], a: str, b: str) -> tuple[list[str], dict]:
    """The seeds both A and B have, and B - A per probe on those seeds (balanced accuracy)."""
    for name in (a, b):
        if name not in results and name not in base["seeds"][seeds[0]]:
            raise SystemExit(f"--compare {a} {b}: {name} is neither a setting nor one of quality.py's encoders")
    both = [s for s in seeds if all(n not in results or s in results[n]["seeds"] for n in (a, b))]
    return both, {probe: np.array([scores_of(b, base, results, s)[probe]["balanced_accuracy"]
                                   - scores_of(a, base, results, s)[probe]["balanced_accuracy"] for s in both])
                  for probe in PROBES}


def comparison_rows(compared: list) -> list[str]:
    """B - A paired by seed, mean [95% t-interval], per probe; ``compared``: (A, B, seeds, gains) of paired_gains."""
    rows = ["", "| comparison | seeds | " + " | ".join(p.replace("_", " ") for p in PROBES) + " |",
            "|---|---|" + "---|" * len(PROBES)]
    for a, b, both, gains in compared:
        cells = [interval(gains[p]) if len(both) else "" for p in PROBES]
        rows.append(f"| {b} - {a} | {','.join(both)} | " + " | ".join(cells) + " |")
    return rows


def plot_comparisons(compared: list, path: Path, probes=("knn", "linear", "few_shot_10"),
                     goal: float = 0.02) -> None:
    """sweep_compare.png: each comparison's mean gain and 95% t-interval per probe (n = its seeds), 0 marked, and
    the kNN goal on the rows whose A is stage 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(probes), figsize=(4 * len(probes), 0.45 * len(compared) + 1.4), sharey=True,
                             squeeze=False)
    rows = np.arange(len(compared))[::-1]
    for ax, probe in zip(axes[0], probes):
        for y, (a, b, both, gains) in zip(rows, compared):
            if not both:
                continue
            mean, low, high = t_interval(gains[probe])
            ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", color="black", capsize=3)
            if probe == "knn" and a == "stage1":
                ax.plot([goal], [y], marker="|", markersize=16, color="tab:green")
        ax.axvline(0, color="grey", lw=1)
        goal_note = (f" (green: goal +{goal:g} over stage 1)"
                     if probe == "knn" and any(a == "stage1" for a, *_ in compared) else "")
        ax.set_title({"knn": "kNN", "linear": "linear"}.get(probe, probe.replace("_", " ")) + ": B - A" + goal_note,
                     fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.supxlabel("balanced accuracy gain, mean and 95% t-interval", fontsize=10)
    axes[0][0].set_yticks(rows, [f"{b} - {a} (n={len(both)})" for a, b, both, _ in compared], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarise(base: dict, results: dict, out: Path, seeds: list[str], compare: list | None = None) -> None:
    """sweep.md: each setting's balanced accuracies and its gain over stage 1 paired by seed (``seeds``)."""
    rows = ["| setting | seeds | kNN bal. acc | kNN gain over stage 1 | linear bal. acc | linear gain over stage 1 |",
            "|---|---|---|---|---|---|"]
    reference = {"name": "stage3 (quality.py)", "seeds": {s: base["seeds"][s]["stage3"] for s in seeds
                                                          if "stage3" in base["seeds"][s]}}
    for entry in [reference, *results.values()]:
        if not entry["seeds"]:
            continue  # quality.py ran without its stage 3 (--variants with no names)
        seeds_done = [s for s in seeds if s in entry["seeds"]]
        cells = []
        for probe in ("knn", "linear"):
            acc = np.array([entry["seeds"][s][probe]["balanced_accuracy"] for s in seeds_done])
            stage1 = np.array([base["seeds"][s]["stage1"][probe]["balanced_accuracy"] for s in seeds_done])
            cells += [cell(acc), cell(acc - stage1, signed=True)]
        changes = entry.get("overrides", []) + [f"generate:{g}" for g in entry.get("generate", [])]
        label = entry["name"] + (f" ({' '.join(changes)})" if changes else "")
        rows.append(f"| {label} | {','.join(seeds_done)} | " + " | ".join(cells) + " |")
    if compare:
        compared = [(a, b, *paired_gains(base, results, seeds, a, b)) for a, b in compare]
        rows += comparison_rows(compared)
        plot_comparisons(compared, out / "sweep_compare.png")
    table = "\n".join(rows)
    (out / "sweep.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"sweep finished in {time.perf_counter() - started:.0f} s")
