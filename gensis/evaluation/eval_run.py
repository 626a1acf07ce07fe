"""``gensis eval``: kNN, linear and few-shot probes of a frozen encoder on labeled tiles; metrics.json + report.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gensis.atomic import atomic_path, write_text
from gensis.config.features import EvalConfig
from gensis.data.augment import eval_transform
from gensis.data.tile_source import open_tiles
from gensis.errors import GensisError
from gensis.evaluation.embed_run import pick_device
from gensis.evaluation.features import extract_features
from gensis.evaluation.few_shot import few_shot_balanced_accuracy
from gensis.evaluation.knn import knn_predict_proba
from gensis.evaluation.linear_probe import linear_probe_proba
from gensis.evaluation.metrics import classification_metrics
from gensis.evaluation.split import train_test_split
from gensis.models.backbone import EncoderSpec, create_backbone, load_encoder


def _encoder(cfg: EvalConfig):
    if cfg.encoder == "random":
        import torch

        torch.manual_seed(cfg.seed)
        spec = EncoderSpec(name=cfg.backbone.name, kwargs=dict(cfg.backbone.kwargs), img_size=cfg.backbone.img_size)
        return create_backbone(spec.name, spec.img_size, spec.kwargs).eval(), spec
    return load_encoder(cfg.encoder)


def evaluate_features(train_x, train_y, test_x, test_y, n_classes, k=20, temperature=0.07, seed=0) -> dict:
    """kNN, linear-probe and few-shot (1, 5, 10, 25 tiles per class, 100 draws) metrics for given features."""
    knn = classification_metrics(test_y, knn_predict_proba(train_x, train_y, test_x, n_classes, k, temperature))
    linear = classification_metrics(test_y, linear_probe_proba(train_x, train_y, test_x, seed=seed))
    few_shot = few_shot_balanced_accuracy(train_x, train_y, test_x, test_y, seed=seed)
    return {"knn": knn, "linear": linear, "few_shot": few_shot}


def run(cfg: EvalConfig) -> int:
    model, spec = _encoder(cfg)
    transform = eval_transform(spec.img_size, spec.mean, spec.std, cfg.grayscale)
    device = pick_device(cfg.trainer)
    if cfg.data.train or cfg.data.test:
        if not (cfg.data.train and cfg.data.test):
            raise GensisError("give both data.train and data.test, or neither (then data.path is split)")
        train_set = open_tiles(cfg.data.train, labels=True, transform=transform)
        test_set = open_tiles(cfg.data.test, labels=True, transform=transform)
        if train_set.classes != test_set.classes:
            raise GensisError(f"data.train classes {train_set.classes} differ from data.test classes {test_set.classes}")
        classes = train_set.classes
        train_x = extract_features(model, train_set, cfg.data.batch_size, cfg.data.workers, device, cfg.progress)
        test_x = extract_features(model, test_set, cfg.data.batch_size, cfg.data.workers, device, cfg.progress)
        train_y, test_y = train_set.labels, test_set.labels
        split = "given"
    else:
        if not cfg.data.path:
            raise GensisError("give data.path (labeled tiles, split here) or data.train and data.test")
        tiles = open_tiles(cfg.data.path, labels=True, transform=transform)
        classes = tiles.classes
        train, test = train_test_split(tiles.labels, tiles.groups, cfg.test_fraction, cfg.seed)
        features = extract_features(model, tiles, cfg.data.batch_size, cfg.data.workers, device, cfg.progress)
        train_x, test_x, train_y, test_y = features[train], features[test], tiles.labels[train], tiles.labels[test]
        split = "by group (groups.csv)" if tiles.groups is not None else "stratified by tile (no groups.csv)"
    if len(classes) < 2:
        raise GensisError(f"data: needs at least two classes, found {classes}")
    results = evaluate_features(train_x, train_y, test_x, test_y, len(classes), cfg.knn_k, cfg.knn_temperature,
                                cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"encoder": cfg.encoder, "encoder_name": spec.name, "classes": classes, "split": split,
              "n_train": int(len(train_y)), "n_test": int(len(test_y)), "seed": cfg.seed, "grayscale": cfg.grayscale,
              **results}
    write_text(out / "metrics.json", json.dumps(report, indent=2))
    plot_confusion(results, classes, out / "confusion.png")
    write_text(out / "report.md", render_report(report))
    for name in ("knn", "linear"):
        m = results[name]
        print(f"{name:6s} balanced accuracy {m['balanced_accuracy']:.3f}  accuracy {m['accuracy']:.3f}  "
              f"macro-F1 {m['macro_f1']:.3f}  AUC {m['auc'] if m['auc'] is None else round(m['auc'], 3)}")
    print(f"-> {out / 'metrics.json'}, {out / 'report.md'}")
    return 0


def render_report(report: dict) -> str:
    lines = [f"# Evaluation of `{report['encoder']}` ({report['encoder_name']})", "",
             f"{report['n_train']} training and {report['n_test']} test tiles, split {report['split']}, "
             f"classes: {', '.join(report['classes'])}" + (", tiles in grayscale." if report.get("grayscale") else "."),
             "", "| probe | balanced accuracy | accuracy | macro-F1 | AUC (one-vs-rest) |", "|---|---|---|---|---|"]
    for name, label in (("knn", "kNN (k=20, cosine)"), ("linear", "linear (logistic regression)")):
        m = report[name]
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        lines.append(f"| {label} | {m['balanced_accuracy']:.3f} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {auc} |")
    if report.get("few_shot"):
        lines += ["", "Few-shot (nearest class prototype of n random labelled tiles per class, balanced accuracy, "
                  "mean ± sd over draws):", "", "| n per class | " + " | ".join(report["few_shot"]) + " |",
                  "|---|" + "---|" * len(report["few_shot"]),
                  "| balanced accuracy | " + " | ".join(f"{v['mean']:.3f} ± {v['std']:.3f}"
                                                     for v in report["few_shot"].values()) + " |"]
    lines += ["", "![confusion matrices](confusion.png)", ""]
    return "\n".join(lines)


def plot_confusion(results: dict, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(classes), 2.5 + 0.6 * len(classes)))
    for ax, name in zip(axes, ("knn", "linear")):
        matrix = np.array(results[name]["confusion_matrix"])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name}: bal. acc {results[name]['balanced_accuracy']:.3f}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
