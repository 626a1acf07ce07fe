"""``gensis mil``: slide-level classification by gated attention MIL (gensis/models/attention_mil.py) on
``gensis features``, k-fold cross-validated.

The slides CSV gives ``slide`` and ``label``, optionally ``patient`` (or ``group``: the folds keep
a patient's slides together, never on both sides) and ``fold`` (the folds as given). Each fold
trains a fresh model with Lightning (Adam, one slide per step, ``seed`` + fold) on the other
folds (tile features standardised by the training slides') and scores its held-out slides: balanced accuracy, macro-F1, one-vs-rest AUC and, for
ordered grades (``ordinal=true``), quadratic kappa. Writes ``metrics.json`` (the mean ``auc`` and
``balanced_accuracy`` over folds at its top level, their sd, and each fold), ``report.md``,
``attention.h5`` (each held-out slide's attention over its tiles) and attention heatmaps over
the thumbnails of a few slides. A fold that finished is not trained again after a kill.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from gensis.atomic import atomic_path, write_text
from gensis.config.mil import MILConfig
from gensis.errors import GensisError
from gensis.models.attention_mil import GatedAttentionMIL
from gensis.output_guard import hold_output_lock


def read_cohort(labels_csv: Path, features: Path) -> dict:
    """Slides, raw labels, groups (patient, else the slide) and given folds of the slides CSV."""
    if not labels_csv.is_file():
        raise GensisError(f"labels={labels_csv}: no such CSV file")
    with open(labels_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "slide" not in columns or "label" not in columns:
            raise GensisError(f"labels={labels_csv}: needs 'slide' and 'label' columns (optionally 'patient' and "
                              f"'fold'), found {columns}")
        group_column = "patient" if "patient" in columns else ("group" if "group" in columns else None)
        rows = list(reader)
    cohort = {"slides": [], "labels": [], "groups": [], "folds": []}
    for line, row in enumerate(rows, start=2):
        slide, label = (row.get("slide") or "").strip(), (row.get("label") or "").strip()
        if not slide or not label:
            raise GensisError(f"{labels_csv}, line {line}: slide and label must both be given")
        if not (features / f"{slide}.h5").is_file():
            raise GensisError(f"features={features}: no {slide}.h5 for slide {slide} ({labels_csv}, line {line}); "
                              f"run gensis features on its tiling, or drop the line")
        cohort["slides"].append(slide)
        cohort["labels"].append(label)
        cohort["groups"].append((row.get(group_column) or slide) if group_column else slide)
        cohort["folds"].append((row.get("fold") or "").strip() if "fold" in columns else "")
    if len(set(cohort["slides"])) != len(cohort["slides"]):
        raise GensisError(f"labels={labels_csv}: a slide is listed twice")
    return cohort


def class_index(labels: list[str], ordinal: bool) -> tuple[list[str], np.ndarray]:
    """The classes (sorted; numerically for ordinal grades) and each slide's class index."""
    if ordinal:
        try:
            classes = sorted(set(labels), key=float)
        except ValueError:
            raise GensisError("ordinal=true needs numeric grades in the label column") from None
    else:
        classes = sorted(set(labels))
    if len(classes) < 2:
        raise GensisError(f"labels: one class only ({classes[0]}); MIL needs at least two")
    return classes, np.array([classes.index(label) for label in labels])


def make_folds(y: np.ndarray, groups: list[str], given: list[str], k: int, seed: int) -> list[np.ndarray]:
    """Held-out indices of each fold: the given fold column, else stratified k folds by group."""
    if any(given):
        names = sorted(set(given))
        return [np.flatnonzero(np.array(given) == name) for name in names]
    from sklearn.model_selection import StratifiedGroupKFold

    if len(set(groups)) < k:
        raise GensisError(f"folds={k} but only {len(set(groups))} patients/slides; lower folds")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(y)), y, groups)]


def classification_metrics(y: np.ndarray, probabilities: np.ndarray, n_classes: int, ordinal: bool) -> dict:
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

    predicted = probabilities.argmax(1)
    result = {"balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
              "macro_f1": float(f1_score(y, predicted, average="macro", labels=list(range(n_classes)))),
              "auc": float("nan")}
    if len(set(y)) == n_classes:   # AUC needs every class among the held-out slides
        result["auc"] = float(roc_auc_score(y, probabilities[:, 1]) if n_classes == 2 else
                              roc_auc_score(y, probabilities, multi_class="ovr", labels=list(range(n_classes))))
    if ordinal:
        result["quadratic_kappa"] = float(cohen_kappa_score(y, predicted, weights="quadratic"))
    return result


class MILModule(L.LightningModule):
    def __init__(self, cfg: MILConfig, in_dim: int, n_classes: int):
        super().__init__()
        self.cfg = cfg
        self.model = GatedAttentionMIL(in_dim, n_classes, cfg.hidden_dim, cfg.attention_dim, cfg.dropout)

    def training_step(self, batch, batch_idx):
        logits, _ = self.model(batch["features"][0])
        return F.cross_entropy(logits[None], batch["label"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


class Bags(torch.utils.data.Dataset):
    def __init__(self, bags: list[np.ndarray], y: np.ndarray):
        self.bags, self.y = bags, y

    def __len__(self):
        return len(self.bags)

    def __getitem__(self, index):
        return {"features": torch.from_numpy(self.bags[index]), "label": int(self.y[index])}


def fit_fold(cfg: MILConfig, bags: list[np.ndarray], y: np.ndarray, train: np.ndarray, test: np.ndarray,
             n_classes: int, fold: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Train on ``train``; the held-out slides' class probabilities and attention. Features are standardised
    per dimension by the training slides' tiles (so one learning rate suits any encoder's feature scale)."""
    L.seed_everything(cfg.seed + fold, workers=True, verbose=False)
    pooled = np.concatenate([bags[i] for i in train])
    mean, std = pooled.mean(0), pooled.std(0) + 1e-6
    bags = [(bag - mean) / std for bag in bags]
    module = MILModule(cfg, bags[0].shape[1], n_classes)
    loader = torch.utils.data.DataLoader(Bags([bags[i] for i in train], y[train]), batch_size=1, shuffle=True)
    accelerator = "cpu" if cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available() else "auto"
    trainer = L.Trainer(max_epochs=cfg.epochs, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1)
    trainer.fit(module, loader)
    module.model.eval().cpu()
    probabilities, attention = [], []
    with torch.no_grad():
        for index in test:
            logits, weights = module.model(torch.from_numpy(bags[index]))
            probabilities.append(torch.softmax(logits, dim=0).numpy())
            attention.append(weights.numpy())
    return np.stack(probabilities), attention


def run(cfg: MILConfig) -> int:
    features, out = Path(cfg.features), Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise GensisError(f"out={out} is a file; give a folder")
    cohort = read_cohort(Path(cfg.labels), features)
    classes, y = class_index(cohort["labels"], cfg.ordinal)
    out.mkdir(parents=True, exist_ok=True)
    hold_output_lock(out)
    (out / "folds").mkdir(exist_ok=True)
    bags, coords = [], []
    for slide in cohort["slides"]:
        try:
            with h5py.File(features / f"{slide}.h5", "r") as f:
                bags.append(f["features"][:].astype(np.float32))
                coords.append(f["coords"][:])
        except (OSError, KeyError) as err:
            raise GensisError(f"{features / f'{slide}.h5'}: not a readable feature file ({err}); run gensis "
                              f"features again") from None
        if len(bags[-1]) == 0:
            raise GensisError(f"{features / f'{slide}.h5'}: no tiles; drop slide {slide} from labels=")
    folds = make_folds(y, cohort["groups"], cohort["folds"], cfg.folds, cfg.seed)
    results, attention = [], {}
    for fold, test in enumerate(folds):
        done = out / "folds" / f"fold{fold}.json"
        if done.is_file():
            result = json.loads(done.read_text())
            with h5py.File(out / "folds" / f"fold{fold}.attention.h5", "r") as f:
                attention.update({name: f[name][:] for name in f})
        else:
            train = np.setdiff1d(np.arange(len(y)), test)
            probabilities, weights = fit_fold(cfg, bags, y, train, test, len(classes), fold)
            result = {"fold": fold, **classification_metrics(y[test], probabilities, len(classes), cfg.ordinal),
                      "slides": [cohort["slides"][i] for i in test], "labels": y[test].tolist(),
                      "probabilities": probabilities.tolist()}
            with atomic_path(out / "folds" / f"fold{fold}.attention.h5") as tmp:
                with h5py.File(tmp, "w") as f:
                    for index, w in zip(test, weights):
                        f.create_dataset(cohort["slides"][index], data=w)
            with atomic_path(done) as tmp:
                tmp.write_text(json.dumps(result, indent=2))
            attention.update({cohort["slides"][i]: w for i, w in zip(test, weights)})
        results.append(result)
        if cfg.progress:
            print(f"fold {fold + 1}/{len(folds)}: balanced accuracy {result['balanced_accuracy']:.3f}, "
                  f"AUC {result['auc']:.3f} on {len(test)} slides", flush=True)
    names = ["balanced_accuracy", "macro_f1", "auc", *(["quadratic_kappa"] if cfg.ordinal else [])]
    summary = {"classes": classes, "n_slides": len(y), "n_folds": len(folds)}
    for name in names:
        values = np.array([r[name] for r in results], dtype=np.float64)
        summary[name], summary[f"{name}_sd"] = float(np.nanmean(values)), float(np.nanstd(values))
    summary["folds"] = [{k: r[k] for k in ("fold", *names, "slides")} for r in results]
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    with atomic_path(out / "attention.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for name, w in attention.items():
                f.create_dataset(name, data=w)
    write_text(out / "report.md", report(summary, names, cfg))
    drawn = draw_heatmaps(cfg, cohort, y, attention, coords, features, out)
    print(f"MIL on {len(y)} slides, {len(folds)} folds: balanced accuracy {summary['balanced_accuracy']:.3f} "
          f"+/- {summary['balanced_accuracy_sd']:.3f}, AUC {summary['auc']:.3f} +/- {summary['auc_sd']:.3f} "
          f"-> {out} (metrics.json, report.md, {drawn} heatmaps)")
    return 0


def report(summary: dict, names: list[str], cfg: MILConfig) -> str:
    lines = [f"# Attention MIL: {summary['n_slides']} slides, {summary['n_folds']} folds", "",
             f"features: `{cfg.features}`; labels: `{cfg.labels}`; classes: {', '.join(summary['classes'])}; "
             f"{cfg.epochs} epochs, lr {cfg.lr:g}, seed {cfg.seed}", "",
             "| fold | slides | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for fold in summary["folds"]:
        lines.append(f"| {fold['fold']} | {len(fold['slides'])} | " +
                     " | ".join(f"{fold[n]:.3f}" for n in names) + " |")
    lines.append("| mean +/- sd | | " + " | ".join(f"{summary[n]:.3f} +/- {summary[n + '_sd']:.3f}" for n in names)
                 + " |")
    return "\n".join(lines) + "\n"


def draw_heatmaps(cfg: MILConfig, cohort: dict, y: np.ndarray, attention: dict, coords: list, features: Path,
                  out: Path) -> int:
    """Attention over the thumbnails of up to ``cfg.heatmaps`` slides (the last class's first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gensis.slides.reader import open_slide

    order = sorted(range(len(y)), key=lambda i: (-y[i], cohort["slides"][i]))[:cfg.heatmaps]
    (out / "heatmaps").mkdir(exist_ok=True)
    for index in order:
        name = cohort["slides"][index]
        with h5py.File(features / f"{name}.h5", "r") as f:
            slide_path, patch = str(f.attrs.get("slide_path", "")), int(f.attrs.get("patch_size_level0", 0))
        xy = coords[index]
        patch = patch or int(np.min(np.diff(np.unique(xy[:, 0]))) if len(np.unique(xy[:, 0])) > 1 else 1)
        width, height = int(xy[:, 0].max() + patch), int(xy[:, 1].max() + patch)
        thumbnail = None
        if slide_path and Path(slide_path).is_file():
            slide = open_slide(slide_path)
            width, height = slide.dimensions
            thumbnail = slide.read_downsampled(max(width, height) / 512)
            slide.close()
        scale = 512 / max(width, height)
        heat = np.full((max(1, int(height * scale)), max(1, int(width * scale))), np.nan)
        weights = attention[name] / max(float(attention[name].max()), 1e-12)
        for (x, y0), w in zip(xy, weights):
            heat[int(y0 * scale): int((y0 + patch) * scale) + 1, int(x * scale): int((x + patch) * scale) + 1] = w
        fig, ax = plt.subplots(figsize=(5, 5 * heat.shape[0] / heat.shape[1]))
        if thumbnail is not None:
            ax.imshow(thumbnail, extent=(0, heat.shape[1], heat.shape[0], 0))
        ax.imshow(heat, cmap="inferno", alpha=0.55, vmin=0, vmax=1, extent=(0, heat.shape[1], heat.shape[0], 0))
        ax.set_title(f"{name} (label {cohort['labels'][index]}): attention")
        ax.axis("off")
        with atomic_path(out / "heatmaps" / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    return len(order)
