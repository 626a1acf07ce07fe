"""Run directories: resolved config, data fingerprint, resume rules, one run at a time, loss-curve plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from gensis.atomic import atomic_path, write_text
from gensis.config.compose import to_yaml
from gensis.data.views_store import keys_sha
from gensis.errors import GensisError
from gensis.output_guard import hold_output_lock

# Settings a resumed run may change: where it runs, what it monitors and reports, and how long it runs.
RESUME_MAY_CHANGE = {"out", "resume", "progress", "data.workers", "data.val", "optim.epochs", "train.epochs",
                     "trainer.max_steps", "trainer.eval_every", "trainer.log_every_n_steps"}
RESUME_MAY_CHANGE_BLOCKS = ("report.", "sampler.", "samples.")


def prepare_run_dir(out: str | Path, cfg, resume: bool, keys: Sequence[str] | None = None,
                    views: dict | None = None) -> tuple[Path, Path | None]:
    """Create ``out``; refuse to overwrite an earlier run unless resuming, and refuse to resume with other
    settings than the run's ``config.yaml`` (except ``RESUME_MAY_CHANGE``) or other tiles than the run's
    ``data.json`` (the count and a hash of the tile ``keys``; for stage 3 also the views store's plan, with
    its encoder and diffusion hashes). Returns (dir, checkpoint to resume)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GensisError(f"out={out} is a file; a run needs a folder: choose another out=")
    last = out / "checkpoints" / "last.ckpt"
    if out.is_dir():
        hold_output_lock(out)  # before anything is read: another run may be writing it
    if last.is_file() and not resume:
        raise GensisError(f"out={out} already holds a run; pass resume=true to continue it or choose another out=")
    if resume and not last.is_file():
        raise GensisError(f"resume=true but {last} does not exist; start without resume=true")
    if resume and (out / "config.yaml").is_file():
        changed = changed_settings(out / "config.yaml", cfg)
        if changed:
            raise GensisError(
                f"resume=true: out={out} was started with other settings ({'; '.join(changed)}; see its config.yaml). "
                "A resumed run keeps its settings (only epochs, workers, monitoring and reports may change): "
                "give the run's own values, or choose another out= for the new settings")
    fingerprint = data_fingerprint(keys) if keys is not None else None
    if fingerprint and views:
        fingerprint["views"] = views
    if resume and fingerprint and (out / "data.json").is_file():
        before = json.loads((out / "data.json").read_text())
        if "views" in before and before["views"] != fingerprint.get("views"):
            raise GensisError(
                f"resume=true: views={cfg.views} is not the views store out={out} was trained on (its data.json "
                f"records the plan {json.dumps(before['views'], sort_keys=True)}); give the run's own views store "
                f"or choose another out=")
        before.pop("views", None)
        if before != {k: v for k, v in fingerprint.items() if k != "views"}:
            raise GensisError(
                f"resume=true: data.path={cfg.data.path} holds {fingerprint['n_tiles']} tiles (keys sha256 "
                f"{fingerprint['keys_sha256']}) but out={out} was trained on {before['n_tiles']} tiles (keys sha256 "
                f"{before['keys_sha256']}, its data.json); give the run's own tiles or choose another out=")
    out.mkdir(parents=True, exist_ok=True)
    hold_output_lock(out)
    write_text(out / "config.yaml", to_yaml(cfg))
    if fingerprint:
        write_text(out / "data.json", json.dumps(fingerprint, indent=2))
    return out, (last if resume else None)


def data_fingerprint(keys: Sequence[str]) -> dict:
    """What identifies a run's tiles: their count and a hash of their keys, in order."""
    return {"n_tiles": len(keys), "keys_sha256": keys_sha(keys)}


def changed_settings(config_yaml: Path, cfg) -> list[str]:
    """``key: before -> now`` for each setting of ``cfg`` that differs from an earlier run's ``config_yaml``
    (``RESUME_MAY_CHANGE`` and ``RESUME_MAY_CHANGE_BLOCKS`` left out; keys the schema gained since read as
    their defaults; two spellings of one existing path count as equal)."""
    from omegaconf import OmegaConf

    # keys the schema gained since the run started read as their defaults, not as changes
    defaults = OmegaConf.create(OmegaConf.to_container(OmegaConf.structured(type(cfg))))
    before = _flatten(OmegaConf.to_container(OmegaConf.merge(defaults, OmegaConf.load(config_yaml))))
    now = _flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))
    changed = []
    for key in sorted(before.keys() | now.keys()):
        old, new = before.get(key), now.get(key)
        if (old == new or key in RESUME_MAY_CHANGE or key.startswith(RESUME_MAY_CHANGE_BLOCKS)
                or _same_path(old, new)):
            continue
        changed.append(f"{key}: {old} -> {new}")
    return changed


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else
                    {f"{prefix}{key}": value})
    return flat


def _same_path(a, b) -> bool:
    if not (isinstance(a, str) and isinstance(b, str)) or not (Path(a).exists() and Path(b).exists()):
        return False
    return Path(a).resolve() == Path(b).resolve()


def metric_points(metrics_csv: Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in a metrics.csv (rows without it skipped; none when the file is absent)."""
    if not metrics_csv.is_file():
        return [], []
    with open(metrics_csv, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(key) not in (None, "")]
    return [int(r["step"]) for r in rows], [float(r[key]) for r in rows]


def plot_metrics(metrics_csv: Path, png: Path, keys: tuple[str, ...] = ("train/loss",), title: str = "",
                 references: dict[str, tuple[float, str]] | None = None) -> None:
    """Line plots of the given metrics against step, three to a row (rows without them are skipped);
    ``references`` draws a labelled dashed line on a key's panel (e.g. ln K on the DINO loss)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics_csv.is_file():
        return
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.5 * rows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        steps, values = metric_points(metrics_csv, key)
        if steps:
            ax.plot(steps, values, marker="." if len(steps) < 30 else None)
        if references and key in references:
            value, label = references[key]
            ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=label)
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def session_log_dir(out: Path) -> str:
    """A fresh ``logs/session_<n>`` name for this launch's CSV log (earlier launches keep theirs)."""
    logs = Path(out) / "logs"
    n = 0
    while (logs / f"session_{n}").exists():
        n += 1
    return f"session_{n}"


def merge_metrics(out: Path) -> None:
    """Rebuild ``metrics.csv`` from every launch's log: rows a later launch redid (after a resume) are dropped."""
    sessions = sorted((Path(out) / "logs").glob("session_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    tables = []
    for path in sessions:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows:
            tables.append(rows)
    merged: list[dict] = []
    for index, rows in enumerate(tables):
        if index + 1 < len(tables):
            next_start = min(int(r["step"]) for r in tables[index + 1])
            rows = [r for r in rows if int(r["step"]) < next_start]
        merged.extend(rows)
    if not merged:
        return
    keys: list[str] = []
    for row in merged:
        keys += [k for k in row if k not in keys]
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(merged)
    write_text(Path(out) / "metrics.csv", buffer.getvalue())
