"""The diversity-fidelity frontier of a stage-2 model: condition noise level x guidance.

    python benchmarks/frontier.py --diffusion RUN --encoder RUN --tiles LABELED_TILES --out DIR \\
        [--noise 0 100 200 400] [--guidance 0.5 1 2] [--report-tiles 300] [--views 2] [ASSESS_KEY=VALUE ...]

For every pair (noise level, guidance) it runs ``gensis assess`` (views drawn with
``report.noise_level`` and ``sampler.guidance``) on labeled tiles and tables: label fidelity
as a share of its ceiling, the source among the view's 10 nearest real tiles, diversity in
the encoder's space and in pixels as a share of hand-made augmentations', and the
interpolation reach. The chosen setting is the most diverse (in pixels) whose label fidelity
is at least ``--min-fidelity`` of the ceiling. Writes frontier.json, frontier.md and
frontier.png (diversity against label fidelity) in ``--out``; each assess is kept and skipped
when run again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import gensis  # noqa: E402


def point(report: dict) -> dict:
    fidelity = report["label_fidelity"]
    return {"label_fidelity": fidelity["views"] / fidelity["ceiling"], "source_top10": report["source_top10"],
            "diversity": report["diversity"] / report["diversity_augmented"],
            "diversity_pixels": report["diversity_pixels"] / report["diversity_pixels_augmented"],
            "reach": report.get("interpolation_reach", float("nan")), "fidelity": report["fidelity"],
            "label_fidelity_raw": fidelity}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffusion", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True)
    parser.add_argument("--tiles", type=Path, required=True, help="labeled tiles (class subfolders, groups.csv)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--noise", type=int, nargs="+", default=[0, 100, 200, 400])
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--report-tiles", type=int, default=300)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--min-fidelity", type=float, default=0.9)
    parser.add_argument("overrides", nargs="*", help="extra gensis assess KEY=VALUE")
    args = parser.parse_args()
    results = {}
    for noise in args.noise:
        for guidance in args.guidance:
            name = f"noise{noise}_guidance{guidance:g}"
            out = args.out / name
            if not (out / "generation.json").is_file():
                gensis("assess", f"diffusion={args.diffusion}", f"encoder={args.encoder}", f"data.path={args.tiles}",
                       f"out={out}", f"report.noise_level={noise}", f"sampler.guidance={guidance}",
                       f"report.tiles={args.report_tiles}", f"report.views={args.views}", "report.pairs=8",
                       *args.overrides)
            results[name] = {"noise_level": noise, "guidance": guidance,
                             **point(json.loads((out / "generation.json").read_text()))}
    eligible = [n for n, r in results.items() if r["label_fidelity"] >= args.min_fidelity]
    chosen = max(eligible, key=lambda n: results[n]["diversity_pixels"]) if eligible else None
    (args.out / "frontier.json").write_text(json.dumps({"chosen": chosen, "points": results}, indent=2))
    rows = ["| noise level | guidance | label fidelity / ceiling | source in top 10 | diversity / hand-made "
            "(embedding) | diversity / hand-made (pixels) | interpolation reach |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        mark = " **(chosen)**" if name == chosen else ""
        rows.append(f"| {r['noise_level']} | {r['guidance']:g}{mark} | {r['label_fidelity']:.3f} | "
                    f"{r['source_top10']:.2f} | {r['diversity']:.2f} | {r['diversity_pixels']:.2f} | "
                    f"{r['reach']:.2f} |")
    table = "\n".join(rows)
    (args.out / "frontier.md").write_text(table + "\n")
    print(table)
    plot(results, chosen, args.min_fidelity, args.out / "frontier.png")


def plot(results: dict, chosen: str | None, min_fidelity: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for guidance in sorted({r["guidance"] for r in results.values()}):
        line = sorted((r for r in results.values() if r["guidance"] == guidance), key=lambda r: r["noise_level"])
        ax.plot([r["diversity_pixels"] for r in line], [r["label_fidelity"] for r in line], marker="o",
                label=f"guidance {guidance:g}")
        for r in line:
            ax.annotate(str(r["noise_level"]), (r["diversity_pixels"], r["label_fidelity"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    if chosen:
        ax.scatter([results[chosen]["diversity_pixels"]], [results[chosen]["label_fidelity"]], s=160,
                   facecolors="none", edgecolors="black", label="chosen")
    ax.axhline(min_fidelity, color="grey", linestyle="--", linewidth=1, label=f"{min_fidelity:g} x ceiling")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1, label="half the hand-made diversity")
    ax.set_xlabel("diversity among a tile's views / hand-made augmentations' (pixels)")
    ax.set_ylabel("label fidelity / ceiling")
    ax.set_title("diversity-fidelity frontier (numbers: condition noise level)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
