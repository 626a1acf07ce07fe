"""``gensis features``: one ``<slide>.h5`` of tile features per slide, in the layout CLAM and TRIDENT read.

Each file holds ``features`` (N x D float32, the encoder's CLS embeddings) and ``coords``
(N x 2 int64, level-0 x, y of each tile's corner), with attrs ``encoder`` (the weights' sha256
prefix), ``encoder_name``, ``mpp``, ``tile_px``, ``patch_size_level0`` and ``slide_path`` (when
the tiling output records them). Tiles come from a ``gensis tile`` output (its tiles.h5, its
tile images, or read from the slides at the stored coordinates) or from a tiles.h5.

Resumable per slide: a finished file of the same encoder and tiles is skipped; each file is
written under a temporary name and renamed whole. Several processes
(``trainer.devices=N``) split the slides between them; bf16 on a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from gensis.atomic import atomic_path, remove_stale_temporaries
from gensis.config.features import SlideFeaturesConfig
from gensis.data.augment import eval_transform
from gensis.data.tile_source import open_tiles
from gensis.errors import GensisError, disk_full_error, is_disk_full
from gensis.evaluation.embed_run import _fabric, pick_device
from gensis.models.backbone import encoder_hash, load_encoder
from gensis.output_guard import hold_output_lock
from gensis.slides.shards import finished_shards, link_or_copy, parse_shard, shard_dir, share


def slides_and_coords(keys: list[str]) -> tuple[list[str], np.ndarray]:
    """Each tile's slide and level-0 corner from its key ``<slide>/<x>_<y>``."""
    slides, coords = [], []
    for key in keys:
        slide, _, name = key.rpartition("/")
        x, _, y = name.partition("_")
        try:
            coords.append((int(x), int(y)))
        except ValueError:
            raise GensisError(f"tile key {key!r} is not <slide>/<x>_<y>: give tiles= a gensis tile output or "
                              f"tiles.h5") from None
        slides.append(slide)
    return slides, np.array(coords, np.int64).reshape(-1, 2)


def slide_attrs(tiles_path: Path, slide: str, store_attrs: dict) -> dict:
    """What the tiling recorded of ``slide``: mpp, tile size, level-0 patch size and the slide's path."""
    attrs = {"mpp": float(store_attrs.get("mpp", 0.0)), "tile_px": int(store_attrs.get("tile_px", 0))}
    coords_file = (tiles_path if tiles_path.is_dir() else tiles_path.parent) / "coords" / f"{slide}.h5"
    if coords_file.is_file():
        with h5py.File(coords_file, "r") as f:
            a = dict(f["coords"].attrs)
        attrs.update(mpp=float(a.get("target_mpp", attrs["mpp"])), tile_px=int(a.get("tile_px", attrs["tile_px"])),
                     patch_size_level0=int(a.get("patch_size_level0", 0)), slide_path=str(a.get("slide_path", "")))
    return attrs


def is_done(path: Path, weights_hash: str, coords: np.ndarray) -> bool:
    """Whether ``path`` is a finished feature file of this encoder for exactly these tiles."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("encoder") == weights_hash and np.array_equal(f["coords"][:], coords)
    except (OSError, KeyError):
        return False


def merge_features(out: Path) -> int:
    """Link every shard's <slide>.h5 into ``out`` and write its features.json; returns the number of slides."""
    folders, count = finished_shards(out)
    slides, encoders = {}, set()
    for folder in folders:
        if not (folder / "features.json").is_file():
            raise GensisError(f"merge=true: {folder} has no features.json (unfinished); run that shard again")
        summary = json.loads((folder / "features.json").read_text())
        encoders.add(summary["encoder"])
        for name in summary["slides"]:
            link_or_copy(str(folder / f"{name}.h5"), str(out / f"{name}.h5"))
        slides.update(summary["slides"])
    if len(encoders) != 1:
        raise GensisError(f"merge=true: the shards in {out / 'shards'} hold features of different encoders")
    with atomic_path(out / "features.json") as tmp:
        tmp.write_text(json.dumps({"encoder": encoders.pop(), "shards": count, "slides": slides}, indent=2))
    print(f"merged {count} shard(s): features of {len(slides)} slide(s) -> {out}")
    return len(slides)


def run(cfg: SlideFeaturesConfig) -> int:
    from tqdm import tqdm

    out, tiles_path = Path(cfg.out), Path(cfg.tiles)
    if out.exists() and not out.is_dir():
        raise GensisError(f"out={out} is a file; give a folder for the <slide>.h5 feature files")
    if cfg.merge:
        merge_features(out)
        return 0
    shard = parse_shard(cfg.shard)
    if shard:
        out = shard_dir(out, *shard)
    out.mkdir(parents=True, exist_ok=True)
    hold_output_lock(out)
    fabric = _fabric(cfg)
    rank, world = (fabric.global_rank, fabric.world_size) if fabric else (0, 1)
    device = fabric.device if fabric else pick_device(cfg.trainer)
    bf16 = device.type == "cuda" and cfg.trainer.resolved_precision().startswith("bf16")
    if rank == 0:
        remove_stale_temporaries(out)
    if fabric:
        fabric.barrier()
    model, spec = load_encoder(cfg.encoder)
    weights_hash = encoder_hash(cfg.encoder)
    tiles = open_tiles(tiles_path, transform=eval_transform(spec.img_size, spec.mean, spec.std))
    store = tiles_path / "tiles.h5" if tiles_path.is_dir() else tiles_path
    store_attrs = {}
    if store.is_file():
        with h5py.File(store, "r") as f:
            store_attrs = dict(f.attrs)
    slides, coords = slides_and_coords(tiles.keys)
    names = list(dict.fromkeys(slides))
    if shard:
        mine = set(share(names, *shard))
        names = [n for n in names if n in mine]
    order = np.argsort(np.array(slides), kind="stable")          # the rows of each slide, in one pass
    sorted_slides = np.array(slides)[order]
    starts = np.flatnonzero(np.r_[True, sorted_slides[1:] != sorted_slides[:-1]])
    groups = np.split(order, starts[1:])
    rows = {str(sorted_slides[start]): group for start, group in zip(starts, groups)}
    rows = {name: rows[name] for name in names}
    mine = names[rank::world]
    todo = [n for n in mine if not is_done(out / f"{n}.h5", weights_hash, coords[rows[n]])]
    if rank == 0 and len(todo) < len(mine):
        print(f"{len(mine) - len(todo)} slide(s) already have these features in {out}, skipping them")
    model = model.to(device).eval()
    bar = tqdm(total=sum(len(rows[n]) for n in todo), desc="features", unit="tile",
               disable=not cfg.progress or rank != 0)
    try:
        for name in todo:
            loader = DataLoader(Subset(tiles, rows[name].tolist()), batch_size=cfg.data.batch_size,
                                num_workers=cfg.data.workers, pin_memory=device.type == "cuda")
            values, position = np.empty((len(rows[name]), spec.embed_dim), np.float32), 0
            with torch.no_grad():
                for batch in loader:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        embedded = model(batch["image"].to(device, non_blocking=True)).float()
                    # copied out: the CLS embedding is a view of the batch's whole token tensor
                    values[position: position + len(embedded)] = embedded.cpu().numpy()
                    position += len(embedded)
                    bar.update(len(embedded))
            attrs = {"encoder": weights_hash, "encoder_name": spec.name, "embed_dim": spec.embed_dim,
                     **slide_attrs(tiles_path, name, store_attrs)}
            with atomic_path(out / f"{name}.h5") as tmp:
                with h5py.File(tmp, "w") as f:
                    f.create_dataset("features", data=values)
                    f.create_dataset("coords", data=coords[rows[name]])
                    for key, value in attrs.items():
                        f.attrs[key] = value
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(out, err) from None
        raise
    bar.close()
    if fabric:
        fabric.barrier()
    if rank == 0:
        manifest = {n: int(len(rows[n])) for n in names}
        with atomic_path(out / "features.json") as tmp:
            tmp.write_text(json.dumps({"encoder": weights_hash, "tiles": str(tiles_path), "slides": manifest},
                                      indent=2))
        print(f"features of {sum(manifest.values())} tiles in {len(names)} slide(s) ({spec.embed_dim}-d, {spec.name}) on "
              f"{world} process(es) -> {out}")
    return 0
