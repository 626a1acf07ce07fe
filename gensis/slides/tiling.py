"""A tiling run: slides -> tissue tiles at a physical resolution (``gensis tile``).

For each slide: open it, find its mpp, detect tissue on a thumbnail, lay a grid of
``tile.size`` px tiles at ``tile.mpp``, keep tiles with enough tissue, and read them from
the pyramid level just finer than the target (resizing when no level matches). Rows of
neighbouring tiles are read as one region. Work is spread over ``workers`` processes at
the level of tile rows, so one big slide uses every worker.

Outputs (DESIGN.md): ``coords/<slide>.h5``, ``tiles.h5`` or ``tiles/<slide>/<x>_<y>.<ext>``,
``qc/<slide>.png`` and ``manifest.csv``. Everything is written under a temporary name and
renamed when complete; a re-run skips slides already done and redoes failed ones.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import OrderedDict
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from gensis.atomic import atomic_path, durable_replace, remove, remove_stale_temporaries, temporary_path
from gensis.config.tile import TileConfig, TileParams
from gensis.data.tile_store import TileStoreWriter, allocate_store, copy_tiles, put_tiles, store_classes, tile_name
from gensis.errors import GensisError, SlideError, UnsupportedSlide, disk_full_error, is_disk_full
from gensis.slides.shards import parse_shard, shard_dir, share
from gensis.output_guard import hold_output_lock
from gensis.slides.discovery import SlideEntry, find_slides
from gensis.slides.grid import grid_columns, make_grid, strips, tissue_fractions
from gensis.slides.labels import load_label_map
from gensis.slides.manifest import Manifest, ManifestRow
from gensis.slides.qc import write_qc_image
from gensis.slides.reader import Slide, best_level_for_downsample, open_slide, resample_run
from gensis.slides.tissue import tissue_mask

STRIP_TILES = 16                 # tiles per run read as one region
BLOCK_RUNS = 8                   # consecutive runs of a column band per job
QC_SIDE = 1024                   # longest side of the QC picture, when the slide is that large
MIN_TISSUE_AREA_UM2 = 20_000.0   # tissue pieces smaller than this (about 140 x 140 um) are dropped
MAX_HOLE_AREA_UM2 = 20_000.0


@dataclass
class SlidePlan:
    entry: SlideEntry
    mpp: float
    coords: np.ndarray
    tissue: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    level: int
    level_downsample: float
    read_px: int
    patch_size_level0: int
    stride_level0: float
    grid_size: int
    seconds: float = 0.0


@dataclass
class TilingSummary:
    out: Path
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    already_done: list[str] = field(default_factory=list)
    n_tiles: int = 0
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------
# per-slide work (runs in worker processes)

_OPEN: "OrderedDict[str, Slide]" = OrderedDict()
MAX_OPEN_SLIDES = 8              # per process; the least recently used one is closed beyond this


def _slide(path: Path) -> Slide:
    key = str(path)
    if key in _OPEN:
        _OPEN.move_to_end(key)
    else:
        _OPEN[key] = open_slide(path)
        while len(_OPEN) > MAX_OPEN_SLIDES:
            _OPEN.popitem(last=False)[1].close()
    return _OPEN[key]


def plan_slide(entry: SlideEntry, params: TileParams, mpp_override: Optional[float], out: Path):
    """Open, mask and grid one slide; write its QC picture. Returns a SlidePlan or (name, error)."""
    start = time.perf_counter()
    try:
        slide = _slide(entry.path)
        mpp = mpp_override or entry.mpp or slide.mpp
        if not mpp:
            raise SlideError(f"{entry.path}: resolution (mpp) unknown: the file carries none; give it with "
                             f"mpp_override=<um/px> or an 'mpp' column in a slides CSV")
        grid = make_grid(*slide.dimensions, slide_mpp=mpp, target_mpp=params.mpp, tile_px=params.size,
                         overlap_px=params.overlap)
        mask_ds = max(1.0, params.mask_mpp / mpp)
        try:
            thumb = slide.read_downsampled(mask_ds)
        except Exception as err:
            raise SlideError(f"{entry.path}: opened, but reading pixels failed ({_short(err)})") from None
        px_area = (mask_ds * mpp) ** 2
        mask = tissue_mask(thumb, min_saturation=params.min_saturation,
                           min_object_px=int(MIN_TISSUE_AREA_UM2 / px_area), max_hole_px=int(MAX_HOLE_AREA_UM2 / px_area))
        fractions = tissue_fractions(mask, mask_ds, grid.coords, grid.patch_size_level0)
        keep = fractions >= params.min_tissue if params.min_tissue > 0 else np.ones(len(fractions), bool)
        coords, tissue = grid.coords[keep], fractions[keep]
        label_map = load_label_map(entry.path)
        if label_map is not None:
            labels, classes = label_map.labels_for(coords, grid.patch_size_level0, slide.dimensions), label_map.classes
        else:
            labels, classes = np.full(len(coords), -1, np.int64), ()
        level = best_level_for_downsample(slide.level_downsamples, params.mpp / mpp)
        level_ds = slide.level_downsamples[level]
        read_px = max(1, int(round(grid.patch_size_level0 / level_ds)))
        qc_ds = min(mask_ds, max(1.0, max(slide.dimensions) / QC_SIDE))
        qc_thumb = thumb if qc_ds == mask_ds else slide.read_downsampled(qc_ds)
        qc_mask = _resize_mask(mask, qc_thumb.shape[:2])
        write_qc_image(out / "qc" / f"{entry.name}.png", qc_thumb, qc_mask, coords, grid.patch_size_level0, qc_ds,
                       title=f"{entry.name}: {len(coords)} tiles, {params.size}px @ {params.mpp} um/px")
        return SlidePlan(entry=entry, mpp=float(mpp), coords=coords, tissue=tissue, labels=labels, classes=classes,
                         level=level, level_downsample=level_ds, read_px=read_px,
                         patch_size_level0=grid.patch_size_level0, stride_level0=grid.stride_level0,
                         grid_size=len(grid.coords), seconds=time.perf_counter() - start)
    except UnsupportedSlide as err:
        return entry.name, str(err), "skipped"
    except SlideError as err:
        return entry.name, str(err), "failed"
    except Exception as err:  # a broken slide must never stop the run; a full output disk must
        if is_disk_full(err):
            raise disk_full_error(out, err) from None
        return entry.name, f"{entry.path}: {type(err).__name__}: {_short(err)}", "failed"


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    rows = np.minimum((np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int), mask.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int), mask.shape[1] - 1)
    return mask[rows][:, cols]


@dataclass(frozen=True)
class BlockJob:
    """Runs of neighbouring tiles in consecutive rows of one column band, read top to bottom by one
    worker so that the slide's tile cache serves the rows they share."""

    slide: str
    path: Path
    runs: tuple               # per run: indices into the slide's kept tiles
    coords: tuple             # per run: their level-0 coords
    level: int
    level_downsample: float
    read_px: int
    tile_px: int
    format: str
    tile_dir: Optional[Path]  # where jpg/png files go
    jpeg_quality: int


def read_block(job: BlockJob):
    """Read each run as one region, resize it once, cut its tiles; write files or return the pixels."""
    try:
        rows, tiles = [], []
        for run_rows, run_coords in zip(job.runs, job.coords):
            rows.append(run_rows)
            tiles.extend(_read_run(job, run_coords))
        all_rows = np.concatenate(rows)
        pixels = np.stack(tiles) if job.format == "h5" else None
        return job.slide, all_rows, pixels, None
    except Exception as err:
        if is_disk_full(err):
            raise disk_full_error(job.tile_dir.parent.parent if job.tile_dir else job.path, err) from None
        rows = np.concatenate(job.runs)
        return job.slide, rows, None, f"{job.path}: reading tiles failed ({type(err).__name__}: {_short(err)})"


def _read_run(job: BlockJob, coords: np.ndarray) -> list:
    from PIL import Image

    slide = _slide(job.path)
    ds = job.level_downsample
    x_first, y = int(coords[0, 0]), int(coords[0, 1])
    offsets = (coords[:, 0] - x_first) / ds
    width = int(round(offsets[-1])) + job.read_px
    region = slide.read_region(x_first, y, job.level, width, job.read_px)
    scale = job.tile_px / job.read_px
    region = resample_run(region, job.read_px, job.tile_px)  # once per run, not once per tile
    starts = np.minimum(np.round(offsets * scale).astype(int), region.shape[1] - job.tile_px)
    out = []
    for start, (x, yy) in zip(starts, coords):
        tile = np.ascontiguousarray(region[:, start: start + job.tile_px])
        if job.format == "h5":
            out.append(tile)
            continue
        target = job.tile_dir / f"{tile_name(x, yy)}.{job.format}"
        image = Image.fromarray(tile)
        if job.format == "jpg":
            image.save(target, format="JPEG", quality=job.jpeg_quality)
        else:
            image.save(target, format="PNG", compress_level=1)
    return out


def _short(err: Exception) -> str:
    return (" ".join(str(err).split()) or type(err).__name__)[:300]


# ----------------------------------------------------------------------------------------
# the run (parent process)

def _run_params(cfg: TileConfig) -> dict:
    return {"tile": asdict(cfg.tile), "mpp_override": cfg.mpp_override}


def _check_run_params(out: Path, cfg: TileConfig) -> None:
    path = out / "tiling.json"
    params = _run_params(cfg)
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != params:
            changed = sorted(k for k in params["tile"] if previous.get("tile", {}).get(k) != params["tile"][k])
            if previous.get("mpp_override") != params["mpp_override"]:
                changed.append("mpp_override")
            raise GensisError(f"out={out} holds a tiling made with other settings ({', '.join(changed)}); "
                              f"choose a new out= folder or delete it")
    else:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(params, indent=2))


def _slide_done(out: Path, name: str, manifest: Manifest, fmt: str, store_slides: set) -> bool:
    row = manifest.get(name)
    if row is None or row.status not in ("ok", "skipped"):
        return False
    if not (out / "coords" / f"{name}.h5").is_file():
        return False
    if row.status == "skipped" or row.n_tiles == 0:
        return True
    if fmt in ("jpg", "png"):
        return (out / "tiles" / name).is_dir()
    if fmt == "h5":
        return (out / "tiles.parts" / f"{name}.h5").is_file() or name in store_slides
    return True


def _store_slides(path: Path, log=print) -> set:
    """The slides an earlier run merged into ``tiles.h5``. A damaged store is moved aside (kept, never
    deleted) and its slides are tiled again."""
    if not path.is_file():
        return set()
    try:
        with h5py.File(path, "r") as f:
            slides = {s.decode() if isinstance(s, bytes) else s for s in np.unique(f["slide"][:])}
            for name in ("images", "coords"):
                f[name][-1:]   # the last rows: a truncated file fails here
            return slides
    except (OSError, KeyError) as err:
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        log(f"{path} is damaged ({' '.join(str(err).split())[:160]}); moved it to {aside.name} and tiling its "
            f"slides again")
        return set()


class _Pool:
    """A process pool, or the current process when workers == 0 (for debugging and tests)."""

    def __init__(self, workers: int):
        # fork starts workers at once; after torch is imported (threads, CUDA) only spawn is safe
        method = "spawn" if "torch" in sys.modules or sys.platform != "linux" else "fork"
        self.pool = multiprocessing.get_context(method).Pool(workers) if workers > 0 else None

    def imap(self, fn, items, chunksize=1):
        if self.pool is None:
            return map(fn, items)
        return self.pool.imap_unordered(fn, items, chunksize=chunksize)

    def close(self):
        if self.pool is not None:
            self.pool.close()
            self.pool.join()

    def terminate(self):
        if self.pool is not None:
            self.pool.terminate()


def _plan_star(args):
    return plan_slide(*args)


def run_tiling(cfg: TileConfig, log=print) -> TilingSummary:
    """Tile every slide of ``cfg.slides`` into ``cfg.out``; see the module docstring."""
    from tqdm import tqdm

    started = time.perf_counter()
    out = Path(cfg.out)
    params = cfg.tile
    entries = find_slides(cfg.slides)
    shard = parse_shard(cfg.shard)
    if shard:
        mine = set(share([e.name for e in entries], *shard))
        entries = [e for e in entries if e.name in mine]
        out = shard_dir(out, *shard)
        log(f"shard {shard[0]}/{shard[1]}: {len(entries)} slide(s) -> {out}")
    if out.exists() and not out.is_dir():
        raise GensisError(f"out={out} is a file; tiling writes a folder: choose another out=")
    out.mkdir(parents=True, exist_ok=True)
    hold_output_lock(out)  # a second run into out= would delete this one's temporaries
    for sub in ("coords", "qc"):
        (out / sub).mkdir(exist_ok=True)
    for sub in ("coords", "qc", "tiles", "tiles.parts"):
        remove_stale_temporaries(out / sub)
    remove_stale_temporaries(out)
    _check_run_params(out, cfg)
    manifest = Manifest(out / "manifest.csv")
    summary = TilingSummary(out=out)
    store_path = out / "tiles.h5"
    in_store = _store_slides(store_path, log) if params.format == "h5" else set()
    todo = []
    for entry in entries:
        if _slide_done(out, entry.name, manifest, params.format, in_store):
            summary.already_done.append(entry.name)
        else:
            todo.append(entry)
    if summary.already_done:
        log(f"{len(summary.already_done)} slide(s) already tiled in {out}, skipping them")

    pool = _Pool(cfg.workers if todo else 0)
    try:
        plans: dict[str, SlidePlan] = {}
        bar = tqdm(total=len(todo), desc="tissue masks", unit="slide", disable=not cfg.progress or not todo)
        for result in pool.imap(_plan_star, [(e, params, cfg.mpp_override, out) for e in todo]):
            bar.update(1)
            if isinstance(result, SlidePlan):
                plans[result.entry.name] = result
            else:
                name, error, status = result
                entry = next(e for e in todo if e.name == name)
                if status == "skipped":
                    _record_skip(manifest, summary, entry, error)
                else:
                    _record_failure(out, manifest, summary, entry, error)
        bar.close()
        _extract(plans, cfg, out, manifest, summary, pool)
        pool.close()
    except BaseException as err:
        pool.terminate()
        if is_disk_full(err):  # not the slides' fault: stop, record nothing against them
            raise disk_full_error(out, err) from None
        raise
    if params.format == "h5":
        try:
            _merge_store(out, manifest, params)
        except OSError as err:
            if is_disk_full(err):
                raise disk_full_error(out, err) from None
            raise
    summary.seconds = time.perf_counter() - started
    return summary


def _record_skip(manifest: Manifest, summary: TilingSummary, entry: SlideEntry, reason: str) -> None:
    """A slide gensis does not tile (not brightfield RGB): skipped, with the reason in the manifest."""
    summary.skipped[entry.name] = reason
    manifest.set(ManifestRow(slide=entry.name, path=str(entry.path), status="skipped", error=reason))


def _record_failure(out: Path, manifest: Manifest, summary: TilingSummary, entry: SlideEntry, error: str,
                    seconds: float = 0.0) -> None:
    summary.failed[entry.name] = error
    manifest.set(ManifestRow(slide=entry.name, path=str(entry.path), status="failed", seconds=seconds, error=error))


def _extract(plans: dict, cfg: TileConfig, out: Path, manifest: Manifest, summary: TilingSummary, pool: _Pool):
    from tqdm import tqdm

    params = cfg.tile
    state = {}
    jobs = []
    for name, plan in plans.items():
        started = time.perf_counter() - plan.seconds
        n = len(plan.coords)
        slide_state = {"plan": plan, "remaining": 0, "error": None, "started": started, "writer": None,
                       "tile_dir": None}
        state[name] = slide_state
        if n == 0 or params.format == "coords":
            continue
        if params.format == "h5":
            (out / "tiles.parts").mkdir(exist_ok=True)  # the part file opens with the slide's first tiles
        else:
            tile_dir = temporary_path(out / "tiles" / name)
            remove(tile_dir)
            tile_dir.mkdir(parents=True)
            slide_state["tile_dir"] = tile_dir
        for block in _blocks(plan, STRIP_TILES, BLOCK_RUNS):
            jobs.append(BlockJob(slide=name, path=plan.entry.path, runs=tuple(block),
                                 coords=tuple(plan.coords[r] for r in block), level=plan.level,
                                 level_downsample=plan.level_downsample, read_px=plan.read_px, tile_px=params.size,
                                 format=params.format, tile_dir=slide_state["tile_dir"],
                                 jpeg_quality=params.jpeg_quality))
            slide_state["remaining"] += 1
    for slide_state in state.values():
        if slide_state["remaining"] == 0:
            _finish_slide(out, manifest, summary, slide_state, params)
    if not jobs:
        return
    total = sum(sum(len(r) for r in j.runs) for j in jobs)
    bar = tqdm(total=total, desc=f"tiles ({len(plans)} slides)", unit="tile", disable=not cfg.progress,
               smoothing=0.05)
    for name, rows, tiles, error in pool.imap(read_block, jobs):
        bar.update(len(rows))
        slide_state = state[name]
        if error and not slide_state["error"]:
            slide_state["error"] = error
        if tiles is not None and not slide_state["error"]:
            if slide_state["writer"] is None:
                plan = slide_state["plan"]
                slide_state["writer"] = allocate_store(
                    temporary_path(out / "tiles.parts" / f"{name}.h5"), params.size, params.mpp,
                    [name] * len(plan.coords), plan.coords, plan.labels, plan.classes)
            put_tiles(slide_state["writer"], rows, tiles)
        slide_state["remaining"] -= 1
        if slide_state["remaining"] == 0:
            _finish_slide(out, manifest, summary, slide_state, params)
    bar.close()


def _blocks(plan: SlidePlan, strip_tiles: int, block_runs: int) -> list[list[np.ndarray]]:
    """Runs of one column band in consecutive rows, ``block_runs`` at a time."""
    runs = strips(plan.coords, plan.stride_level0, strip_tiles)
    bands = grid_columns(plan.coords[[r[0] for r in runs]], plan.stride_level0) // strip_tiles
    blocks, current, current_band = [], [], None
    for run, band in zip(runs, bands):
        if current and (band != current_band or len(current) == block_runs):
            blocks.append(current)
            current = []
        current.append(run)
        current_band = band
    if current:
        blocks.append(current)
    return blocks


def _finish_slide(out: Path, manifest: Manifest, summary: TilingSummary, slide_state: dict, params: TileParams):
    plan: SlidePlan = slide_state["plan"]
    name = plan.entry.name
    seconds = time.perf_counter() - slide_state["started"]
    writer: Optional[TileStoreWriter] = slide_state["writer"]
    if writer is not None:
        writer.close()
    if slide_state["error"]:
        remove(temporary_path(out / "tiles.parts" / f"{name}.h5"))
        if slide_state["tile_dir"] is not None:
            remove(slide_state["tile_dir"])
        _record_failure(out, manifest, summary, plan.entry, slide_state["error"], seconds)
        return
    if writer is not None:
        durable_replace(temporary_path(out / "tiles.parts" / f"{name}.h5"), out / "tiles.parts" / f"{name}.h5")
    if slide_state["tile_dir"] is not None:
        final = out / "tiles" / name
        remove(final)
        durable_replace(slide_state["tile_dir"], final)
    write_coords(out / "coords" / f"{name}.h5", plan, params)
    status = "ok" if plan.grid_size > 0 else "skipped"
    note = "" if plan.grid_size > 0 else "slide is smaller than one tile at this resolution"
    manifest.set(ManifestRow(slide=name, path=str(plan.entry.path), status=status, n_tiles=len(plan.coords),
                             mpp=f"{plan.mpp:.4f}", read_level=str(plan.level), seconds=seconds, error=note))
    if status == "ok":
        summary.ok.append(name)
    else:
        summary.skipped[name] = note
    summary.n_tiles += len(plan.coords)


def write_coords(path: Path, plan: SlidePlan, params: TileParams) -> None:
    """``coords/<slide>.h5`` in the layout CLAM and TRIDENT users read, plus tissue and labels."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("coords", data=plan.coords.astype(np.int64).reshape(-1, 2))
            f.create_dataset("tissue", data=plan.tissue.astype(np.float32))
            f.create_dataset("labels", data=plan.labels.astype(np.int64))
            attrs = f["coords"].attrs
            attrs["patch_size_level0"] = plan.patch_size_level0
            attrs["patch_size"] = params.size
            attrs["target_mpp"] = params.mpp
            attrs["slide_mpp"] = plan.mpp
            attrs["read_level"] = plan.level
            attrs["level_downsample"] = plan.level_downsample
            attrs["tile_px"] = params.size
            attrs["overlap"] = params.overlap
            attrs["slide_path"] = str(Path(plan.entry.path).resolve())
            attrs["name"] = plan.entry.name
            attrs["classes"] = json.dumps(list(plan.classes))


def _merge_store(out: Path, manifest: Manifest, params: TileParams) -> None:
    """Rebuild ``tiles.h5`` from the previous store and this run's per-slide parts, then drop the parts."""
    parts_dir = out / "tiles.parts"
    parts = {p.stem: p for p in parts_dir.glob("*.h5")} if parts_dir.is_dir() else {}
    store_path = out / "tiles.h5"
    if not parts and store_path.is_file():
        return
    ok = [row.slide for row in manifest.rows.values() if row.status == "ok" and row.n_tiles > 0]
    classes: list[str] = []
    old = h5py.File(store_path, "r") if store_path.is_file() else None
    try:
        old_slides = None
        if old is not None:
            old_slides = np.array([s.decode() if isinstance(s, bytes) else s for s in old["slide"][:]])
            classes = store_classes(old)
        for name in ok:
            if name in parts:
                with h5py.File(parts[name], "r") as f:
                    classes = _merge_classes(classes, store_classes(f))
        with atomic_path(store_path) as tmp:
            with TileStoreWriter(tmp, params.size, params.mpp, classes) as writer:
                for name in ok:
                    if name in parts:
                        with h5py.File(parts[name], "r") as f:
                            mapping = {i: classes.index(c) for i, c in enumerate(store_classes(f))}
                            copy_tiles(f, np.arange(len(f["coords"])), writer, mapping)
                    elif old_slides is not None:
                        rows = np.flatnonzero(old_slides == name)
                        mapping = {i: classes.index(c) for i, c in enumerate(store_classes(old))}
                        copy_tiles(old, rows, writer, mapping)
    finally:
        if old is not None:
            old.close()
    for part in parts.values():
        remove(part)
    remove(parts_dir)


def _merge_classes(a: list[str], b) -> list[str]:
    return a + [c for c in b if c not in a]


def print_summary(summary: TilingSummary, log=print) -> None:
    done = len(summary.ok) + len(summary.skipped)
    log(f"tiled {done} slide(s), {summary.n_tiles} tiles in {summary.seconds:.1f} s -> {summary.out}"
        + (f"; {len(summary.already_done)} already done" if summary.already_done else ""))
    for name, reason in summary.skipped.items():
        log(f"  skipped {name}: {reason}")
    if summary.failed:
        log(f"{len(summary.failed)} slide(s) failed (see {summary.out / 'manifest.csv'}):")
        for name, error in summary.failed.items():
            log(f"  {name}: {error}")
