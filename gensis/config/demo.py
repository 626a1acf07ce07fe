"""Configs of ``gensis synth`` (the synthetic slide) and ``gensis demo``."""

from __future__ import annotations

from dataclasses import dataclass

from gensis.config.tile import TileParams, _help


@dataclass(frozen=True)
class SynthConfig:
    out: str = _help("path of the slide to write (.svs or .tiff; a label map is written beside it), or with "
                     "cohort=N the cohort's folder")
    cohort: int = _help("N > 0: a cohort of N small slides (width x height) in out/slides/ and out/slides.csv "
                        "(slide, label, path) whose label 1 is one small region of nuclei texture", 0)
    lesion_um: float = _help("radius of a cohort slide's nuclei region in microns (smaller: harder)", 48.0)
    width: int = _help("level-0 width in pixels", 4096)
    height: int = _help("level-0 height in pixels", 4096)
    mpp: float = _help("level-0 resolution in microns per pixel", 0.5)
    seed: int = _help("texture seed (same seed, same slide)", 0)
    stain: float = _help("stain variation between slides and across a slide (0: none; 0.5: strong)", 0.0)
    level_factor: int = _help("downsample between pyramid levels (Aperio uses 4)", 4)
    progress: bool = _help("show a progress bar", True)

    def __post_init__(self):
        if self.width < 64 or self.height < 64:
            raise ValueError(f"width and height must be at least 64 pixels, got {self.width} x {self.height}")
        if self.mpp <= 0:
            raise ValueError(f"mpp must be > 0, got {self.mpp}")
        if self.stain < 0:
            raise ValueError(f"stain must be >= 0, got {self.stain}")
        if self.level_factor < 2:
            raise ValueError(f"level_factor must be at least 2, got {self.level_factor}")


@dataclass(frozen=True)
class DemoConfig:
    out: str = _help("folder for everything the demo makes", "demo")
    slide_size: int = _help("side of the built-in synthetic slide in pixels", 4096)
    slide_mpp: float = _help("resolution of the synthetic slide", 0.5)
    tile: TileParams = _help("tiling parameters", factory=lambda: TileParams(mpp=1.0, size=64, format="h5"))
    workers: int = _help("parallel worker processes for tiling", 2)
    recipe: str = _help("experiment preset every step runs with (configs/experiment/)", "demo")
    progress: bool = _help("show progress bars", True)

    def __post_init__(self):
        if self.slide_size < 256:
            raise ValueError(f"slide_size must be at least 256, got {self.slide_size}")
