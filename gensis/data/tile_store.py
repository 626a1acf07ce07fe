"""The tile store ``tiles.h5``: tiles and their provenance in one HDF5 file.

Layout (DESIGN.md): ``images`` uint8 N x H x W x 3, chunked per tile, compressed and checksummed
(Fletcher-32: a damaged chunk fails to read instead of giving wrong pixels);
``slide`` (string) and ``coords`` (int64 N x 2, level-0 x, y) per tile; ``label``
(int64, -1 = none); attrs ``tile_px``, ``mpp``, ``classes`` (JSON list).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import h5py
import numpy as np

STRING = h5py.string_dtype("utf-8")


class TileStoreWriter:
    """Append tiles to a new store (write to a temporary path; see :mod:`gensis.atomic`)."""

    def __init__(self, path: Path, tile_px: int, mpp: float, classes: Sequence[str] = (), compression: str = "lzf"):
        self.file = h5py.File(path, "w")
        self.count = 0
        f = self.file
        f.create_dataset("images", shape=(0, tile_px, tile_px, 3), maxshape=(None, tile_px, tile_px, 3),
                         dtype=np.uint8, chunks=(1, tile_px, tile_px, 3), compression=compression,
                         fletcher32=True)
        f.create_dataset("slide", shape=(0,), maxshape=(None,), dtype=STRING, chunks=(4096,))
        f.create_dataset("coords", shape=(0, 2), maxshape=(None, 2), dtype=np.int64, chunks=(4096, 2))
        f.create_dataset("label", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        f.attrs["tile_px"] = tile_px
        f.attrs["mpp"] = mpp
        f.attrs["classes"] = json.dumps(list(classes))

    def append(self, images: np.ndarray, slides: Sequence[str], coords: np.ndarray,
               labels: Optional[np.ndarray] = None) -> None:
        n = len(images)
        if n == 0:
            return
        start, end = self.count, self.count + n
        for name in ("images", "slide", "coords", "label"):
            self.file[name].resize(end, axis=0)
        self.file["images"][start:end] = images
        self.file["slide"][start:end] = list(slides)
        self.file["coords"][start:end] = coords
        self.file["label"][start:end] = labels if labels is not None else np.full(n, -1, np.int64)
        self.count = end

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def store_classes(file: h5py.File) -> list[str]:
    return json.loads(file.attrs.get("classes", "[]"))


def copy_tiles(src: h5py.File, rows: np.ndarray, dst: TileStoreWriter, label_offset_map: Optional[dict] = None,
               batch: int = 256) -> None:
    """Append the given rows of an open store to ``dst`` (in batches, never the whole file in memory)."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    for i in range(0, len(rows), batch):
        part = rows[i: i + batch]
        labels = src["label"][part]
        if label_offset_map:
            labels = np.array([label_offset_map.get(int(v), -1) for v in labels], np.int64)
        dst.append(src["images"][part], [s.decode() if isinstance(s, bytes) else s for s in src["slide"][part]],
                   src["coords"][part], labels)


def tile_name(x, y) -> str:
    """A tile's name from its level-0 corner, ``<x>_<y>``: its file name and the end of its key."""
    return f"{int(x)}_{int(y)}"


def tile_keys(slides: Sequence[str], coords: np.ndarray) -> list[str]:
    """Stable tile keys ``<slide>/<x>_<y>``."""
    return [f"{s}/{tile_name(x, y)}" for s, (x, y) in zip(slides, coords)]


def allocate_store(path: Path, tile_px: int, mpp: float, slides: Sequence[str], coords: np.ndarray,
                   labels: np.ndarray, classes: Sequence[str] = ()) -> TileStoreWriter:
    """A store with all metadata written and room for ``len(coords)`` tiles, filled by :func:`put_tiles`."""
    writer = TileStoreWriter(path, tile_px, mpp, classes)
    n = len(coords)
    for name in ("images", "slide", "coords", "label"):
        writer.file[name].resize(n, axis=0)
    writer.file["slide"][:] = list(slides)
    writer.file["coords"][:] = coords
    writer.file["label"][:] = labels
    writer.count = n
    return writer


def put_tiles(writer: TileStoreWriter, rows: np.ndarray, images: np.ndarray) -> None:
    rows = np.asarray(rows)
    if len(rows) and np.all(np.diff(rows) == 1):
        writer.file["images"][rows[0]: rows[-1] + 1] = images
    else:
        for row, image in zip(rows, images):
            writer.file["images"][row] = image
