"""Cohort scale: a deterministic share of the slides per job (``shard=I/N`` or ``shard=slurm``), each into its
own part of the output, ``out/shards/I-of-N/``, and ``merge=true`` joining the parts into ``out``.

Slides are sorted by name and shard I takes every N-th from the I-th, so any job of an array
knows its share without talking to the others, and a re-run of one shard redoes only its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np

from gensis.atomic import atomic_path
from gensis.errors import GensisError

SHARD_DIR = "shards"


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N) or ``"slurm"`` (SLURM_ARRAY_TASK_ID counted from SLURM_ARRAY_TASK_MIN, of
    SLURM_ARRAY_TASK_COUNT) -> (I, N); None without a shard."""
    if spec in (None, "", "null"):
        return None
    if str(spec) == "slurm":
        try:
            task = int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            count = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
        except (KeyError, ValueError):
            raise GensisError("shard=slurm needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT: run it as a job of "
                              "a SLURM array (sbatch --array=0-N), or give shard=I/N") from None
        return task, count
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not found or not int(found.group(1)) < int(found.group(2)):
        raise GensisError(f"shard={spec}: give I/N with 0 <= I < N (e.g. shard=0/8), or shard=slurm")
    return int(found.group(1)), int(found.group(2))


def shard_dir(out: Path, index: int, count: int) -> Path:
    return Path(out) / SHARD_DIR / f"{index}-of-{count}"


def share(names: list[str], index: int, count: int) -> list[str]:
    """Shard ``index`` of ``count``'s slides: every ``count``-th of the names in sorted order."""
    return sorted(names)[index::count]


def finished_shards(out: Path) -> tuple[list[Path], int]:
    """Every shard folder of ``out`` (in shard order) and N; refuses mixed or missing shards, naming them."""
    folders = sorted((Path(out) / SHARD_DIR).glob("*-of-*")) if (Path(out) / SHARD_DIR).is_dir() else []
    if not folders:
        raise GensisError(f"merge=true: no shards in {Path(out) / SHARD_DIR}; run the shard=I/N jobs first")
    counts = {int(f.name.split("-of-")[1]) for f in folders}
    if len(counts) != 1:
        raise GensisError(f"merge=true: {Path(out) / SHARD_DIR} holds shards of different N ({sorted(counts)}); "
                          f"remove the stale ones")
    count = counts.pop()
    present = {int(f.name.split("-of-")[0]) for f in folders}
    missing = sorted(set(range(count)) - present)
    if missing:
        raise GensisError(f"merge=true: shard(s) {', '.join(f'{m}/{count}' for m in missing)} missing in "
                          f"{Path(out) / SHARD_DIR}; run them first")
    return [shard_dir(out, i, count) for i in range(count)], count


def link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system allows it (no second copy of big tiles), else a copy."""
    try:
        if os.path.exists(dst):
            os.remove(dst)
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def merge_tilings(out: Path, log=print) -> int:
    """Join the shards' tilings into ``out``: manifest, coords, QC pictures, tile images and one tiles.h5
    (tiles in shard order, class lists merged). Returns the number of slides."""
    from gensis.data.tile_store import TileStoreWriter, copy_tiles, store_classes
    from gensis.slides.manifest import Manifest

    out = Path(out)
    folders, count = finished_shards(out)
    settings = [(f / "tiling.json").read_text() if (f / "tiling.json").is_file() else None for f in folders]
    if None in settings:
        raise GensisError(f"merge=true: {folders[settings.index(None)]} has no tiling.json; run that shard again")
    if len({json.dumps(json.loads(s), sort_keys=True) for s in settings}) != 1:
        raise GensisError(f"merge=true: the shards in {out / SHARD_DIR} were tiled with different settings")
    manifest = Manifest(out / "manifest.csv")
    for sub in ("coords", "qc"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    stores = []
    for folder in folders:
        for row in Manifest(folder / "manifest.csv").rows.values():
            manifest.rows[row.slide] = row
        for sub in ("coords", "qc"):
            for path in sorted((folder / sub).glob("*")):
                if ".tmp-" not in path.name:
                    link_or_copy(str(path), str(out / sub / path.name))
        if (folder / "tiles").is_dir():
            shutil.copytree(folder / "tiles", out / "tiles", copy_function=link_or_copy, dirs_exist_ok=True)
        if (folder / "tiles.h5").is_file():
            stores.append(folder / "tiles.h5")
    manifest.save()
    params = json.loads(settings[0])
    with atomic_path(out / "tiling.json") as tmp:
        tmp.write_text(json.dumps(params, indent=2))
    if stores:
        classes: list[str] = []
        for store in stores:
            with h5py.File(store, "r") as f:
                classes += [c for c in store_classes(f) if c not in classes]
        with atomic_path(out / "tiles.h5") as tmp:
            with TileStoreWriter(tmp, int(params["tile"]["size"]), float(params["tile"]["mpp"]), classes) as writer:
                for store in stores:
                    with h5py.File(store, "r") as f:
                        mapping = {i: classes.index(c) for i, c in enumerate(store_classes(f))}
                        copy_tiles(f, np.arange(len(f["coords"])), writer, mapping)
    log(f"merged {count} shard(s): {len(manifest.rows)} slide(s) -> {out}")
    return len(manifest.rows)
