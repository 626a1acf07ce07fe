"""One entry point from a path to a torch Dataset of tiles: :func:`open_tiles`.

Accepted paths:

- a folder of images (recursive); with ``labels=True`` the top-level class subfolders
  give labels, and a ``groups.csv`` (file, label, group) gives near-duplicate groups for
  group-aware splits;
- a tile store ``tiles.h5`` (:mod:`gensis.data.tile_store`);
- a tiling output dir (``gensis tile``): its ``tiles.h5``, its image files, or, for
  ``tile.format=coords``, tiles read on the fly from the slides through ``coords/*.h5``.

Items are dicts ``{"image", "key", "label"}``; ``image`` is an RGB uint8 array (H, W, 3),
or whatever ``transform`` makes of the PIL image. HDF5 files and slides are opened
lazily in each DataLoader worker, never in the parent.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable, Optional

import h5py
import numpy as np
from torch.utils.data import Dataset

from gensis.data.lazy_h5 import LazyH5
from gensis.data.tile_store import tile_keys, tile_name
from gensis.errors import GensisError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


class TileDataset(Dataset):
    """Common interface: ``keys``, ``labels`` (int64, -1 = none), ``classes``, ``groups`` (or None)."""

    keys: list[str]
    labels: np.ndarray
    classes: list[str]
    groups: Optional[np.ndarray] = None

    def __init__(self, transform: Optional[Callable] = None):
        self.transform = transform

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        image = self.load(index)
        if self.transform is not None:
            from PIL import Image

            image = self.transform(Image.fromarray(image))
        return {"image": image, "key": self.keys[index], "label": int(self.labels[index])}


def _read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB: 16-bit grayscale scaled by its bit depth (not clipped), transparency
    composited on white, CMYK and palettes converted by Pillow."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return to_rgb8(image, path)
    except OSError as err:
        raise GensisError(f"{path}: cannot read image ({err})") from None


def to_rgb8(image, path) -> np.ndarray:
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):      # 16-bit grayscale (Pillow opens 16-bit PNGs as I)
        values = np.asarray(image).astype(np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise GensisError(f"{path}: {image.mode} pixels outside 0-65535; convert it to 8- or 16-bit RGB")
        gray = np.round(values * 255.0 / 65535.0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F":
        raise GensisError(f"{path}: floating-point pixels have no fixed brightness scale; save it as 8- or "
                          f"16-bit RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


class ImageFolderTiles(TileDataset):
    def __init__(self, root: Path, labels: bool = False, transform=None):
        super().__init__(transform)
        self.root = Path(root)
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
        if not files:
            raise GensisError(f"{self.root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
        self.paths = files
        self.keys = [p.relative_to(self.root).as_posix() for p in files]
        if labels:
            names = [k.split("/")[0] if "/" in k else "" for k in self.keys]
            if "" in names:
                raise GensisError(f"{self.root}: labels=true needs every image inside a class subfolder; "
                                  f"{self.keys[names.index('')]} is not")
            self.classes = sorted(set(names))
            self.labels = np.array([self.classes.index(n) for n in names], np.int64)
        else:
            self.classes = []
            self.labels = np.full(len(files), -1, np.int64)
        self.groups = self._read_groups()

    def _read_groups(self) -> Optional[np.ndarray]:
        path = self.root / "groups.csv"
        if not path.is_file():
            return None
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "group"} <= set(reader.fieldnames):
                raise GensisError(f"{path}: needs columns file,group (and optionally label)")
            table = {row["file"]: row["group"] for row in reader}
        missing = [k for k in self.keys if k not in table]
        if missing:
            raise GensisError(f"{path}: no group for {len(missing)} image(s), e.g. {missing[0]}")
        return np.array([table[k] for k in self.keys])

    def load(self, index):
        return _read_image(self.paths[index])


class H5Tiles(TileDataset):
    """A ``tiles.h5`` store; the file is opened on first access in each process."""

    def __init__(self, path: Path, labels: bool = False, transform=None):
        super().__init__(transform)
        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as f:
                missing = [k for k in ("images", "slide", "coords") if k not in f]
                if missing:
                    raise GensisError(f"{self.path}: not a gensis tile store (missing {', '.join(missing)})")
                slides = [s.decode() if isinstance(s, bytes) else s for s in f["slide"][:]]
                coords = f["coords"][:]
                stored = f["label"][:] if "label" in f else np.full(len(coords), -1, np.int64)
                self.classes = json.loads(f.attrs.get("classes", "[]"))
        except OSError as err:
            raise GensisError(f"{self.path}: cannot open tile store ({err})") from None
        self.keys = tile_keys(slides, coords)
        self.slides = np.array(slides)
        self.coords = coords
        self.labels = stored.astype(np.int64) if labels else np.full(len(coords), -1, np.int64)
        if labels and (self.labels < 0).any():
            raise GensisError(f"{self.path}: labels=true but {(self.labels < 0).sum()} tile(s) have no label")
        self._h5 = LazyH5(self.path)

    def load(self, index):
        try:
            return self._h5()["images"][index]
        except OSError as err:   # a damaged chunk: name the store and the tile, not h5py's internals
            raise GensisError(f"{self.path}: tile {index} ({self.keys[index]}) cannot be read ({err}); the store "
                              f"is damaged: tile the slides again into a new out=") from None


class TilingDirTiles(TileDataset):
    """Tiles of a ``gensis tile`` output dir without a store: image files, or read from the slides."""

    def __init__(self, root: Path, labels: bool = False, transform=None):
        super().__init__(transform)
        self.root = Path(root)
        self.keys, self.items, all_labels, self.classes = [], [], [], []
        for coords_file in sorted((self.root / "coords").glob("*.h5")):
            with h5py.File(coords_file, "r") as f:
                coords = f["coords"][:]
                attrs = dict(f["coords"].attrs)
                slide_labels = f["labels"][:] if "labels" in f else np.full(len(coords), -1)
            name = str(attrs.get("name", coords_file.stem))
            classes = json.loads(attrs.get("classes", "[]"))
            for c in classes:
                if c not in self.classes:
                    self.classes.append(c)
            remap = np.array([self.classes.index(c) for c in classes] + [-1], np.int64)
            tile_dir = self.root / "tiles" / name
            files = {}
            if tile_dir.is_dir():
                files = {p.stem: p for p in tile_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
            for (x, y), label in zip(coords, slide_labels):
                stem = tile_name(x, y)
                source = files.get(stem) or (Path(str(attrs["slide_path"])), int(x), int(y), attrs)
                self.keys.append(f"{name}/{stem}")
                self.items.append(source)
                all_labels.append(remap[label] if label >= 0 else -1)
        if not self.keys:
            raise GensisError(f"{self.root}: tiling output dir has no tiles (coords/*.h5 empty or missing)")
        stored = np.array(all_labels, np.int64)
        self.labels = stored if labels else np.full(len(stored), -1, np.int64)
        if labels and (self.labels < 0).any():
            raise GensisError(f"{self.root}: labels=true but {(self.labels < 0).sum()} tile(s) have no label")
        self._slides = {}

    def load(self, index):
        item = self.items[index]
        if isinstance(item, Path):
            return _read_image(item)
        from gensis.slides.reader import open_slide, resample_run

        path, x, y, attrs = item
        if path not in self._slides:
            self._slides[path] = open_slide(path)
        slide = self._slides[path]
        level = int(attrs["read_level"])
        read_px = int(round(int(attrs["patch_size_level0"]) / float(attrs["level_downsample"])))
        region = slide.read_region(x, y, level, read_px, read_px)
        return np.ascontiguousarray(resample_run(region, read_px, int(attrs["tile_px"])))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_slides"] = {}
        return state


def open_tiles(path: str | os.PathLike, labels: bool = False, transform: Optional[Callable] = None) -> TileDataset:
    """A Dataset over the tiles at ``path`` (see the module docstring for what it accepts)."""
    path = Path(path)
    if not path.exists():
        raise GensisError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() in (".h5", ".hdf5"):
            return H5Tiles(path, labels, transform)
        raise GensisError(f"{path}: not a tile source (give a folder of images, a tiles.h5, or a tiling output dir)")
    if (path / "coords").is_dir() and (path / "manifest.csv").is_file():
        if (path / "tiles.h5").is_file():
            return H5Tiles(path / "tiles.h5", labels, transform)
        return TilingDirTiles(path, labels, transform)
    if (path / "tiles.h5").is_file() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
        return H5Tiles(path / "tiles.h5", labels, transform)  # a folder that holds a tile store and no images
    return ImageFolderTiles(path, labels, transform)
