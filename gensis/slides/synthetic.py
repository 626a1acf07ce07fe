"""A deterministic synthetic H&E-like whole-slide image with known tissue regions.

The slide is a pyramidal JPEG TIFF that OpenSlide reads as Aperio (``MPP``, ``AppMag``).
An elliptical piece of tissue on white glass is split into four quadrants, each with
its own texture drawn at physical scale (microns), so every tile carries a ground-truth
label:

    0 nuclei   dense, dark-purple nuclei on light purple (tumour-like)
    1 stroma   pink collagen fibres with sparse elongated nuclei
    2 fat      white adipocytes with thin pink membranes
    3 mucus    pale blue-grey mucin with wisps and few small cells

A label map ``<stem>.labels.png`` + ``<stem>.labels.json`` is written beside the slide;
``gensis tile`` picks it up and stores each tile's label.

``stain`` > 0 varies the staining as labs and slides do: each colour channel's optical density is
scaled by exp(stain * (g_c + 2 (n_c(x, y) - 0.5))), with g_c in [-1, 1] drawn once per slide from
its seed and n_c a smooth field a quarter of the slide across, so that colour alone tells the
textures apart less well, and less well again on another slide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from gensis.atomic import atomic_path

CLASSES = ("nuclei", "stroma", "fat", "mucus")
TILE = 256
LABEL_MAP_DOWNSAMPLE = 32
THUMBNAIL_SIDE = 768
RENDER_MPP = 0.5   # finest resolution the textures are drawn at


@dataclass(frozen=True)
class SyntheticSlideSpec:
    width: int = 4096
    height: int = 4096
    mpp: float = 0.5
    seed: int = 0
    level_factor: int = 4
    min_level_side: int = 256
    jpeg_quality: int = 90
    layout: str = "quadrants"     # or "cohort": stroma (left), fat (top right), mucus (bottom right), no nuclei
    lesion: tuple = ()            # (x, y, radius) in level-0 px: a disc of the nuclei texture (a cohort's lesion)
    stain: float = 0.0            # strength of the slide's and the position's stain variation (0: none)

    def level_size(self, downsample: int) -> tuple[int, int]:
        """(width, height) of the level ``downsample`` times smaller than level 0 (rounded up)."""
        return -(-self.width // downsample), -(-self.height // downsample)

    @property
    def downsamples(self) -> list[int]:
        out = [1]
        while max(self.width, self.height) // (out[-1] * self.level_factor) >= self.min_level_side:
            out.append(out[-1] * self.level_factor)
        return out


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A uniform [0, 1) value per integer lattice point (integer mixing, wraps mod 2**32)."""
    h = (ix.astype(np.int64) * 374761393 + iy.astype(np.int64) * 668265263 + (seed * 31 + salt) * 2246822519)
    h = h & 0xFFFFFFFF
    h = (h ^ (h >> 13)) * 1274126177 & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).astype(np.float32) / float(0x1000000)


def _value_noise(x: np.ndarray, y: np.ndarray, scale: float, seed: int, salt: int) -> np.ndarray:
    """Smooth noise in [0, 1) with features of about ``scale`` (same unit as x, y)."""
    gx, gy = x / scale, y / scale
    ix, iy = np.floor(gx), np.floor(gy)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    v00 = _hash(ix, iy, seed, salt)
    v10 = _hash(ix + 1, iy, seed, salt)
    v01 = _hash(ix, iy + 1, seed, salt)
    v11 = _hash(ix + 1, iy + 1, seed, salt)
    return (v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy


def _blobs(x, y, cell, radius_range, keep, seed, salt, elongation=1.0):
    """Darkness in [0, 1] of round (or elongated) blobs on a jittered grid, one per kept cell."""
    ix, iy = np.floor(x / cell), np.floor(y / cell)
    jx = _hash(ix, iy, seed, salt + 1)
    jy = _hash(ix, iy, seed, salt + 2)
    r = radius_range[0] + (radius_range[1] - radius_range[0]) * _hash(ix, iy, seed, salt + 3)
    present = _hash(ix, iy, seed, salt + 4) < keep
    margin = radius_range[1] * elongation
    cx = (ix * cell) + margin + jx * max(cell - 2 * margin, 1e-3)
    cy = (iy * cell) + margin + jy * max(cell - 2 * margin, 1e-3)
    dx, dy = (x - cx) / elongation, (y - cy)
    d = np.sqrt(dx * dx + dy * dy) / r
    return np.where(present, np.clip(1.5 - 1.5 * d, 0, 1) ** 0.5, 0.0)


def _voronoi_edge(x, y, cell, seed, salt):
    """Distance gap between the nearest and second-nearest jittered points (small at membranes)."""
    ix, iy = np.floor(x / cell), np.floor(y / cell)
    d1 = np.full(x.shape, np.inf, np.float32)
    d2 = np.full(x.shape, np.inf, np.float32)
    for ox in (-1, 0, 1):
        for oy in (-1, 0, 1):
            cx = (ix + ox + 0.15 + 0.7 * _hash(ix + ox, iy + oy, seed, salt)) * cell
            cy = (iy + oy + 0.15 + 0.7 * _hash(ix + ox, iy + oy, seed, salt + 1)) * cell
            d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
            d2 = np.where(d < d1, d1, np.minimum(d2, d))
            d1 = np.minimum(d1, d)
    return d2 - d1


class SyntheticSlide:
    """Renders any region of the synthetic slide at any downsample; labels by region."""

    def __init__(self, spec: SyntheticSlideSpec):
        self.spec = spec

    def labels_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Label (0..3) at level-0 positions, -1 on background."""
        s = self.spec
        cx, cy = s.width / 2, s.height / 2
        um_x, um_y = x * s.mpp, y * s.mpp
        wobble = 0.12 * (_value_noise(um_x, um_y, 0.15 * s.width * s.mpp, s.seed, 7) - 0.5)
        inside = ((x - cx) / (0.44 * s.width)) ** 2 + ((y - cy) / (0.42 * s.height)) ** 2 < 1.0 + wobble
        if s.layout == "cohort":
            region = np.where(x < cx, 1, np.where(y < cy, 2, 3))
        else:
            region = (y >= cy).astype(np.int64) * 2 + (x >= cx).astype(np.int64)
        if s.lesion:
            lx, ly, radius = s.lesion
            region = np.where((x - lx) ** 2 + (y - ly) ** 2 < radius ** 2, 0, region)
        return np.where(inside, region, -1)

    def render(self, x0: float, y0: float, width: int, height: int, downsample: float = 1.0) -> np.ndarray:
        """RGB uint8 (height, width, 3) of the level-0 region at (x0, y0) sampled every ``downsample`` px."""
        s = self.spec
        xs = x0 + (np.arange(width, dtype=np.float64) + 0.5) * downsample
        ys = y0 + (np.arange(height, dtype=np.float64) + 0.5) * downsample
        x, y = np.meshgrid(xs, ys)
        label = self.labels_at(x, y)
        um_x, um_y = x * s.mpp, y * s.mpp
        glass = np.array([0.96, 0.955, 0.95], np.float32)
        rgb = np.empty((height, width, 3), np.float32)
        rgb[:] = glass
        rgb += (0.015 * (_value_noise(um_x, um_y, 40.0, s.seed, 11) - 0.5))[..., None]
        painters = (self._nuclei, self._stroma, self._fat, self._mucus)
        for index, paint in enumerate(painters):
            where = label == index
            if where.any():
                rgb[where] = paint(um_x[where], um_y[where])
        tissue = label >= 0
        if s.stain > 0 and tissue.any():
            rgb[tissue] = self._stained(rgb[tissue], um_x[tissue], um_y[tissue])
        return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)

    def _stained(self, rgb, x, y):
        """``rgb`` (N, 3) in [0, 1] with each channel's optical density scaled by the slide's stain field."""
        s = self.spec
        offset = np.random.default_rng([s.seed, 90]).uniform(-1, 1, 3)
        scale = 0.25 * max(s.width, s.height) * s.mpp
        factor = np.stack([np.exp(s.stain * (offset[c] + 2 * (_value_noise(x, y, scale, s.seed, 91 + c) - 0.5)))
                           for c in range(3)], -1).astype(np.float32)
        return np.exp(np.log(np.clip(rgb, 1e-3, 1)) * factor)

    def _nuclei(self, x, y):
        seed = self.spec.seed
        base = np.array([0.86, 0.66, 0.82], np.float32)
        dark = np.array([0.30, 0.16, 0.48], np.float32)
        n = _value_noise(x, y, 25.0, seed, 21)[:, None]
        blob = _blobs(x, y, 11.0, (2.8, 4.2), 0.85, seed, 30)[:, None]
        color = base * (0.92 + 0.16 * n)
        return color * (1 - blob) + dark * blob

    def _stroma(self, x, y):
        seed = self.spec.seed
        pink = np.array([0.95, 0.70, 0.80], np.float32)
        fibre = np.array([0.85, 0.45, 0.62], np.float32)
        dark = np.array([0.38, 0.20, 0.52], np.float32)
        warp = 6.0 * _value_noise(x, y, 60.0, seed, 41)
        streak = 0.5 + 0.5 * np.sin((x * 0.8 + y * 0.6) / 2.2 + warp)
        streak = (streak ** 3)[:, None]
        blob = _blobs(x, y, 45.0, (1.6, 2.4), 0.35, seed, 50, elongation=3.0)[:, None]
        color = pink * (1 - streak) + fibre * streak
        return color * (1 - blob) + dark * blob

    def _fat(self, x, y):
        seed = self.spec.seed
        white = np.array([0.96, 0.85, 0.90], np.float32)   # pale: a saturation mask still finds fat
        membrane = np.array([0.86, 0.52, 0.70], np.float32)
        gap = _voronoi_edge(x, y, 55.0, seed, 61)
        edge = np.clip(1.0 - gap / 4.0, 0, 1)[:, None]
        return white * (1 - edge) + membrane * edge

    def _mucus(self, x, y):
        seed = self.spec.seed
        base = np.array([0.76, 0.78, 0.92], np.float32)
        wisp = np.array([0.62, 0.64, 0.84], np.float32)
        dark = np.array([0.35, 0.25, 0.55], np.float32)
        n = _value_noise(x, y, 35.0, seed, 71) * 0.6 + _value_noise(x, y, 9.0, seed, 72) * 0.4
        w = np.clip((n - 0.45) * 3.0, 0, 1)[:, None]
        blob = _blobs(x, y, 70.0, (2.0, 3.0), 0.3, seed, 80)[:, None]
        color = base * (1 - w) + wisp * w
        return color * (1 - blob) + dark * blob

    def label_map(self, downsample: int = LABEL_MAP_DOWNSAMPLE) -> np.ndarray:
        """uint8 map (0 = background, 1 + label elsewhere) at 1 / ``downsample`` of level 0."""
        s = self.spec
        w, h = s.level_size(downsample)
        xs = (np.arange(w) + 0.5) * downsample
        ys = (np.arange(h) + 0.5) * downsample
        x, y = np.meshgrid(xs, ys)
        return (self.labels_at(x, y) + 1).astype(np.uint8)

    def _tiles(self, downsample: int) -> Iterator[np.ndarray]:
        """Level tiles, row by row. Levels finer than RENDER_MPP are drawn at RENDER_MPP and
        upsampled (bilinear): the textures hold no finer detail, and it is 4x faster at 0.25 um/px."""
        from PIL import Image

        s = self.spec
        lw, lh = s.level_size(downsample)
        factor = 1
        while s.mpp * downsample * factor * 2 <= RENDER_MPP and TILE % (factor * 2) == 0:
            factor *= 2
        width = -(-lw // TILE) * TILE
        for ty in range(0, lh, TILE):
            strip = self.render(0, ty * downsample, width // factor, TILE // factor, downsample * factor)
            if factor > 1:
                strip = np.asarray(Image.fromarray(strip).resize((width, TILE), Image.BILINEAR))
            for tx in range(0, lw, TILE):
                yield strip[:, tx: tx + TILE]

    def write(self, path: str | Path, progress: bool = False) -> Path:
        """Write the pyramidal Aperio TIFF and its label map; atomic. Returns the slide path."""
        import tifffile
        from PIL import Image

        s = self.spec
        path = Path(path)
        levels = s.downsamples
        app_mag = int(round(10.0 / s.mpp))
        description = (f"Aperio Image Library gensis synthetic\r\n{s.width}x{s.height} [0,0 {s.width}x{s.height}] "
                       f"({TILE}x{TILE}) JPEG/RGB Q={s.jpeg_quality}|AppMag = {app_mag}|MPP = {s.mpp}"
                       f"|Filename = {path.stem}|gensis.seed = {s.seed}")
        bar = None
        if progress:
            from tqdm import tqdm

            total = sum(-(-w // TILE) * -(-h // TILE) for w, h in map(s.level_size, levels))
            bar = tqdm(total=total, desc=f"synthetic slide {path.name}", unit="tile")

        def counted(iterator):
            for tile in iterator:
                if bar is not None:
                    bar.update(1)
                yield tile

        with atomic_path(path) as tmp:
            with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
                for index, ds in enumerate(levels):
                    lw, lh = s.level_size(ds)
                    tif.write(counted(self._tiles(ds)), shape=(lh, lw, 3), dtype=np.uint8, tile=(TILE, TILE),
                              photometric="rgb", compression="jpeg", compressionargs={"level": s.jpeg_quality},
                              description=description if index == 0 else f"Aperio level {index}",
                              metadata=None, subfiletype=0)
                    if index == 0:  # Aperio's second directory is a small stripped thumbnail
                        scale = max(s.width, s.height) / THUMBNAIL_SIDE
                        tw, th = max(1, int(s.width / scale)), max(1, int(s.height / scale))
                        tif.write(self.render(0, 0, tw, th, scale), photometric="rgb", compression="jpeg",
                                  description=f"Aperio Image Library gensis synthetic\r\n{s.width}x{s.height} -> "
                                              f"{tw}x{th} - |thumbnail", metadata=None)
        if bar is not None:
            bar.close()
        label_png = path.with_name(path.stem + ".labels.png")
        with atomic_path(label_png) as tmp:
            Image.fromarray(self.label_map()).save(tmp, format="PNG")
        with atomic_path(path.with_name(path.stem + ".labels.json")) as tmp:
            tmp.write_text(json.dumps({"classes": list(CLASSES), "downsample": LABEL_MAP_DOWNSAMPLE,
                                       "background": 0}, indent=2))
        return path


def write_synthetic_slide(path: str | Path, width: int = 4096, height: int = 4096, mpp: float = 0.5,
                          seed: int = 0, level_factor: int = 4, progress: bool = False, stain: float = 0.0) -> Path:
    """Write a synthetic slide (see module docstring) and its label map to ``path``."""
    spec = SyntheticSlideSpec(width=width, height=height, mpp=mpp, seed=seed, level_factor=level_factor, stain=stain)
    return SyntheticSlide(spec).write(path, progress=progress)


def write_cohort(out: str | Path, n_slides: int, size: int = 1024, mpp: float = 0.5, seed: int = 0,
                 lesion_radius_um: float = 48.0, progress: bool = False) -> Path:
    """``n_slides`` synthetic slides of stroma, fat and mucus in ``<out>/slides/``; every second one (label 1)
    also holds one small disc of the nuclei texture at a random place inside its tissue, the only thing that
    tells the classes apart. Writes ``<out>/slides.csv`` (slide, label, path). Returns that CSV."""
    import csv

    from tqdm import tqdm

    out = Path(out)
    (out / "slides").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in tqdm(range(n_slides), desc="synthetic cohort", unit="slide", disable=not progress):
        label = index % 2
        name = f"case{index:03d}"
        lesion = ()
        if label:
            angle, reach = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.25
            lesion = (size / 2 + reach * size * np.cos(angle), size / 2 + reach * size * np.sin(angle),
                      lesion_radius_um / mpp)
        spec = SyntheticSlideSpec(width=size, height=size, mpp=mpp, seed=seed * 1000 + index, layout="cohort",
                                  lesion=lesion)
        path = out / "slides" / f"{name}.svs"
        if not path.is_file():
            SyntheticSlide(spec).write(path)
        rows.append({"slide": name, "label": label, "path": f"slides/{name}.svs"})
    with atomic_path(out / "slides.csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["slide", "label", "path"])
            writer.writeheader()
            writer.writerows(rows)
    return out / "slides.csv"
