"""Open a whole-slide image: OpenSlide for every format it reads, tifffile for other TIFF / OME-TIFF.

Both readers expose the same small interface (:class:`Slide`): pyramid level sizes and
downsamples, native mpp, and ``read_region`` returning an RGB uint8 array.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from gensis.errors import SlideError
from gensis.slides.resolution import mpp_from_ome_xml, mpp_from_openslide_properties, mpp_from_resolution_tag, \
    mpp_from_aperio_description

OPENSLIDE_CACHE_BYTES = 128 << 20
_SHARED_CACHE = None
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".qptiff")


def slide_name(path: str | os.PathLike) -> str:
    """A slide's name: its file name without the extension (``.ome.tif`` counts as one)."""
    name = Path(path).name
    for double in (".ome.tiff", ".ome.tif", ".ome.btf"):
        if name.lower().endswith(double):
            return name[: -len(double)]
    return Path(name).stem


class Slide:
    """A pyramidal image; coordinates are level-0 pixels unless said otherwise."""

    path: Path
    level_dimensions: list[tuple[int, int]]
    level_downsamples: list[float]
    mpp: Optional[float]
    format: str

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 array (height, width, 3) of the region whose top-left is level-0 (x, y)."""
        raise NotImplementedError

    def read_downsampled(self, downsample: float) -> np.ndarray:
        """The whole slide reduced by ``downsample`` (relative to level 0), read from the best level."""
        from PIL import Image

        level = best_level_for_downsample(self.level_downsamples, downsample)
        level_ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        out_w = max(1, int(round(self.dimensions[0] / downsample)))
        out_h = max(1, int(round(self.dimensions[1] / downsample)))
        scale = level_ds / downsample
        canvas = Image.new("RGB", (out_w, out_h), (255, 255, 255))
        block = 4096
        for by in range(0, lh, block):
            for bx in range(0, lw, block):
                w, h = min(block, lw - bx), min(block, lh - by)
                region = self.read_region(int(bx * level_ds), int(by * level_ds), level, w, h)
                tw, th = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
                small = Image.fromarray(region).resize((tw, th), Image.BILINEAR, reducing_gap=2.0)
                canvas.paste(small, (int(round(bx * scale)), int(round(by * scale))))
        return np.asarray(canvas)

    def close(self) -> None:
        pass


def best_level_for_downsample(downsamples: list[float], downsample: float) -> int:
    """The coarsest level whose downsample is at most ``downsample`` (1% tolerance)."""
    best = 0
    for level, ds in enumerate(downsamples):
        if ds <= downsample * 1.01 and ds >= downsamples[best]:
            best = level
    return best


class OpenSlideSlide(Slide):
    format = "openslide"

    def __init__(self, path: Path):
        import openslide

        self.path = Path(path)
        self._slide = openslide.OpenSlide(str(path))
        if hasattr(openslide, "OpenSlideCache"):  # one cache per process, shared by every open slide
            global _SHARED_CACHE
            if _SHARED_CACHE is None:
                _SHARED_CACHE = openslide.OpenSlideCache(OPENSLIDE_CACHE_BYTES)
            self._slide.set_cache(_SHARED_CACHE)
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.mpp = mpp_from_openslide_properties(self._slide.properties)
        self.vendor = self._slide.properties.get("openslide.vendor", "unknown")
        self._direct = self._direct_tiff_reader()

    def _direct_tiff_reader(self) -> Optional["TiffSlide"]:
        """For TIFF-based formats whose pyramid tifffile sees exactly as OpenSlide does, read pixels
        through tifffile + imagecodecs: the same decoded tiles, about 3x faster than OpenSlide's
        read_region. Anything else (other vendors, mismatching levels) stays with OpenSlide."""
        if self.vendor not in ("aperio", "generic-tiff") or self.path.suffix.lower() not in TIFF_SUFFIXES + (".svs",):
            return None
        try:
            direct = TiffSlide(self.path)
        except Exception:
            return None
        if direct.level_dimensions != self.level_dimensions:
            direct.close()
            return None
        return direct

    def read_region(self, x, y, level, width, height):
        if self._direct is not None:
            return self._direct.read_region(x, y, level, width, height)
        image = self._slide.read_region((int(x), int(y)), int(level), (int(width), int(height)))
        if image.getchannel("A").getextrema()[0] == 255:  # fully opaque (the usual case): no copies
            return np.asarray(image.convert("RGB"))
        rgba = np.asarray(image)
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = 255  # outside the scanned area: white, like glass
        return rgb

    def close(self):
        self._slide.close()
        if self._direct is not None:
            self._direct.close()


class TiffSlide(Slide):
    """TIFF and OME-TIFF pyramids OpenSlide cannot read, through tifffile + zarr (reads only the tiles needed)."""

    format = "tifffile"

    def __init__(self, path: Path):
        import tifffile
        import zarr

        self.path = Path(path)
        self._tif = tifffile.TiffFile(str(path))
        series = self._tif.series[0]
        axes = series.axes
        if "Y" not in axes or "X" not in axes:
            raise SlideError(f"{path}: TIFF series has axes {axes!r}, expected an image with Y and X")
        self._axes = axes
        self._levels = []
        self.level_dimensions = []
        for level in range(len(series.levels)):
            store = series.aszarr(level=level)
            array = zarr.open(store, mode="r")
            if isinstance(array, zarr.Group):
                array = array[str(level)] if str(level) in array else array[list(array.array_keys())[0]]
            self._levels.append(array)
            shape = dict(zip(axes, series.levels[level].shape))
            self.level_dimensions.append((int(shape["X"]), int(shape["Y"])))
        width0 = self.level_dimensions[0][0]
        self.level_downsamples = [width0 / d[0] for d in self.level_dimensions]
        self.mpp = self._find_mpp()

    def _find_mpp(self) -> Optional[float]:
        if self._tif.ome_metadata:
            mpp = mpp_from_ome_xml(self._tif.ome_metadata)
            if mpp:
                return mpp
        page = self._tif.pages[0]
        mpp = mpp_from_aperio_description(page.description or "")
        if mpp:
            return mpp
        tag = page.tags.get("XResolution")
        unit = page.tags.get("ResolutionUnit")
        if tag is None:
            return None
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        return mpp_from_resolution_tag(num / den if den else 0, int(unit.value) if unit is not None else None)

    def read_region(self, x, y, level, width, height):
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(round(x / ds)), int(round(y / ds))
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, lw), min(ly + height, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        index = []
        for axis in self._axes:
            if axis == "Y":
                index.append(slice(y0, y1))
            elif axis == "X":
                index.append(slice(x0, x1))
            elif axis in "SC":
                index.append(slice(None))
            else:
                index.append(0)
        data = np.asarray(self._levels[level][tuple(index)])
        kept = [a for a in self._axes if a in "YXSC"]
        if "S" in kept or "C" in kept:
            channel = "S" if "S" in kept else "C"
            data = np.moveaxis(data, [kept.index("Y"), kept.index("X"), kept.index(channel)], [0, 1, 2])
        else:
            data = data[..., None]
        data = to_uint8_rgb(data)
        out[y0 - ly: y1 - ly, x0 - lx: x1 - lx] = data
        return out

    def close(self):
        self._tif.close()


def resample_run(region: np.ndarray, read_px: int, tile_px: int) -> np.ndarray:
    """Scale a run of tiles read at ``read_px`` (its height) so that a tile is ``tile_px``.

    An exact integer reduction uses a box filter (PIL ``reduce``), anything else bilinear
    with PIL's reducing gap. Tiling and the on-the-fly tile source share this, so both give
    the same pixels for a tile that is read alone or whose run allows the exact reduction.
    """
    from PIL import Image

    if read_px == tile_px:
        return region
    height, width = region.shape[:2]
    image = Image.fromarray(region)
    factor = read_px // tile_px
    if factor * tile_px == read_px and width % factor == 0:
        return np.asarray(image.reduce(factor))
    new_width = max(tile_px, int(round(width * tile_px / read_px)))
    return np.asarray(image.resize((new_width, tile_px), Image.BILINEAR, reducing_gap=2.0))


def to_uint8_rgb(data: np.ndarray) -> np.ndarray:
    """(H, W, C) of any dtype and 1-4 channels -> (H, W, 3) uint8."""
    if data.dtype != np.uint8:  # a fixed scale per dtype, so every region of a slide maps alike
        top = float(np.iinfo(data.dtype).max) if np.issubdtype(data.dtype, np.integer) else 1.0
        data = np.clip(data.astype(np.float32) / top * 255.0, 0, 255).astype(np.uint8)
    channels = data.shape[2]
    if channels == 1:
        return np.repeat(data, 3, axis=2)
    if channels == 2:
        return np.concatenate([data, data[..., :1]], axis=2)
    return np.ascontiguousarray(data[..., :3])


def open_slide(path: str | os.PathLike) -> Slide:
    """Open ``path`` with OpenSlide, falling back to tifffile for TIFF files OpenSlide cannot read.

    Raises :class:`SlideError` naming the file, the readers tried and why each failed.
    """
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"{path}: file not found")
    reasons = []
    try:
        return OpenSlideSlide(path)
    except Exception as err:  # openslide raises several types for unknown or broken files
        reasons.append(f"OpenSlide: {_short(err)}")
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            return TiffSlide(path)
        except Exception as err:
            reasons.append(f"tifffile: {_short(err)}")
    raise SlideError(f"{path}: cannot open slide ({'; '.join(reasons)})")


def _short(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]
