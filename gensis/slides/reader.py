"""Open a whole-slide image: OpenSlide for every format it reads, tifffile for other TIFF / OME-TIFF.

Both readers expose the same small interface (:class:`Slide`): pyramid level sizes and
downsamples, native mpp, and ``read_region`` returning an RGB uint8 array.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from gensis.errors import NotBrightfield, SlideError, UnsupportedSlide
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
        try:
            self._direct = self._direct_tiff_reader()
        except NotBrightfield:
            self._slide.close()
            raise

    def _direct_tiff_reader(self) -> Optional["TiffSlide"]:
        """For TIFF-based formats whose pyramid tifffile sees exactly as OpenSlide does, read pixels
        through tifffile + imagecodecs: the same decoded tiles, about 3x faster than OpenSlide's
        read_region. Anything else (other vendors, mismatching levels) stays with OpenSlide."""
        if self.vendor not in ("aperio", "generic-tiff") or self.path.suffix.lower() not in TIFF_SUFFIXES + (".svs",):
            return None
        try:
            direct = TiffSlide(self.path)
        except NotBrightfield:  # OpenSlide would show its first channel as a gray slide
            raise
        except Exception:  # e.g. CMYK: OpenSlide converts it to RGB itself
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
        self._premultiplied = _check_brightfield(path, series)
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
        self._top = self._white_level(series)

    def _white_level(self, series) -> float:
        """The sample value that means full brightness: the dtype's maximum for 8-bit and float data; for
        16/32-bit integers the MaxSampleValue tag, else BitsPerSample, else (a 10-, 12- or 14-bit scanner's data
        in a 16-bit file, tagged as 16) the smallest such depth that holds the brightest sample of the
        coarsest level. Fixed per slide, so every region of it maps alike."""
        dtype = np.dtype(series.dtype)
        if dtype == np.uint8 or not np.issubdtype(dtype, np.integer):
            return 255.0 if dtype == np.uint8 else 1.0
        full_bits = dtype.itemsize * 8
        page = series.keyframe
        tag = page.tags.get("MaxSampleValue")
        if tag is not None:
            value = np.max(tag.value)
            if 0 < value < 2 ** full_bits - 1:
                return float(value)
        bits = int(np.max(page.bitspersample))
        if bits < full_bits:
            return float(2 ** bits - 1)
        brightest = _brightest_sample(self._levels[-1], self._axes)
        for depth in (8, 10, 12, 14):
            if depth > 8 and brightest <= 2 ** depth - 1:
                return float(2 ** depth - 1)
        return float(2 ** full_bits - 1)

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
        data = to_uint8_rgb(data, top=self._top, premultiplied=self._premultiplied)
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


def to_uint8_rgb(data: np.ndarray, top: Optional[float] = None, premultiplied: bool = False) -> np.ndarray:
    """(H, W, C) of any dtype, 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels -> (H, W, 3) uint8.

    ``top`` is the sample value of full brightness (default: the dtype's maximum, 1.0 for floats). Alpha
    is composited on white (``premultiplied``: the colour is already multiplied by alpha).
    """
    if top is None:
        top = float(np.iinfo(data.dtype).max) if np.issubdtype(data.dtype, np.integer) else 1.0
    channels = data.shape[2]
    if data.dtype != np.uint8 or top != 255.0 or channels in (2, 4):
        values = data.astype(np.float32) / top
        if channels in (2, 4):
            colour, alpha = values[..., :-1], np.clip(values[..., -1:], 0, 1)
            values = colour + (1.0 - alpha) if premultiplied else colour * alpha + (1.0 - alpha)
        data = np.round(np.clip(values, 0, 1) * 255.0).astype(np.uint8)
    if data.shape[2] == 1:
        return np.repeat(data, 3, axis=2)
    return np.ascontiguousarray(data[..., :3])


_BRIGHTFIELD_PHOTOMETRIC = {1: "MINISBLACK", 2: "RGB", 6: "YCBCR"}
_PHOTOMETRIC_NAMES = {0: "MINISWHITE (inverted gray)", 3: "PALETTE (indexed colour)", 4: "MASK",
                      5: "SEPARATED (CMYK)", 8: "CIELAB", 9: "ICCLAB", 10: "ITULAB", 32844: "LOGL", 32845: "LOGLUV"}


def _check_brightfield(path: Path, series) -> bool:
    """Refuse, with the reason, a TIFF that is not a brightfield gray or RGB(A) image; True when its alpha
    is premultiplied (associated)."""
    page = series.keyframe
    photometric = int(page.photometric)
    if photometric not in _BRIGHTFIELD_PHOTOMETRIC:
        name = _PHOTOMETRIC_NAMES.get(photometric, str(photometric))
        raise UnsupportedSlide(f"{path}: colour model {name} is not brightfield RGB or gray; convert the slide "
                               f"to RGB (e.g. vips copy in.tif out.tif[compression=jpeg,tile,pyramid] "
                               f"interpretation=srgb)")
    shape = dict(zip(series.axes, series.shape))
    samples = shape.get("S", 1)
    planes = int(np.prod([size for axis, size in shape.items() if axis not in "YXS"]))  # C, Q, I, Z, T
    if photometric == 1 and samples * planes > 2:
        raise NotBrightfield(f"{path}: {samples * planes} gray channels (a fluorescence or multiplex image?); "
                             f"gensis tiles brightfield RGB slides")
    if photometric in (2, 6) and (planes > 1 or samples not in (3, 4)):
        raise NotBrightfield(f"{path}: RGB with {samples} samples and {planes} planes; gensis tiles one "
                             f"brightfield RGB(A) image per slide")
    extra = np.atleast_1d(page.extrasamples) if len(page.extrasamples) else ()
    return bool(len(extra)) and int(extra[0]) == 1


def _brightest_sample(level, axes: str, blocks: int = 16, side: int = 512) -> int:
    """The largest sample value in up to ``blocks`` evenly spread ``side``-px blocks of ``level`` (a zarr array
    with ``axes``)."""
    shape = level.shape
    if int(np.prod(shape)) <= blocks * side * side * 4:
        return int(np.max(level[...]))
    height_axis, width_axis = axes.index("Y"), axes.index("X")
    best = 0
    per_side = int(np.ceil(np.sqrt(blocks)))
    for i in range(per_side):
        for j in range(per_side):
            y = int((shape[height_axis] - side) * i / max(1, per_side - 1))
            x = int((shape[width_axis] - side) * j / max(1, per_side - 1))
            index = [slice(None)] * len(shape)
            index[height_axis] = slice(max(0, y), max(0, y) + side)
            index[width_axis] = slice(max(0, x), max(0, x) + side)
            best = max(best, int(np.max(level[tuple(index)])))
    return best



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
    except NotBrightfield:
        raise
    except Exception as err:  # openslide raises several types for unknown or broken files
        reasons.append(f"OpenSlide: {_short(err)}")
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            return TiffSlide(path)
        except UnsupportedSlide:
            raise
        except Exception as err:
            reasons.append(f"tifffile: {_short(err)}")
    raise SlideError(f"{path}: cannot open slide ({'; '.join(reasons)})")


def _short(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]
