"""Drive one peer tiler (hs2p or LazySlide) the way a user of it would.

Run by ``benchmarks/tiling.py`` inside the peers' virtualenv (never inside gensis's own
environment), one process per run, so that the benchmark can time it and sample the
memory of its whole process tree:

    python tiling_peer_driver.py TOOL --slide S --out DIR --mpp 0.5 --size 224 \
        --workers 2 --min-tissue 0.5 --jpeg-quality 90

Each tool uses its own tissue detection, its own tile grid and its own slide reader. Tiles
are written to disk as JPEG: by the tool itself where it has a JPEG writer (hs2p writes a
tar of JPEGs), otherwise here, one file per tile, from pixels read through the tool's API.
The level-0 (x, y) of every written tile goes to ``DIR/coords.npy``; the last line printed
is a JSON summary (tool, version, tiles, seconds per phase).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _save_jpeg(array, path: Path, quality: int) -> None:
    from PIL import Image

    Image.fromarray(array[..., :3]).save(path, format="JPEG", quality=quality)


# ----------------------------------------------------------------------------------------
# hs2p: tissue (HSV) + grid + tile export to <sample>.tiles.tar, all by hs2p itself

def run_hs2p(args) -> dict:
    import numpy as np
    from importlib.metadata import version

    import hs2p
    from hs2p import MaskSamplingConfig, SegmentationConfig, SlideSpec, TilingConfig, tile_slides

    out = Path(args.out)
    sample = Path(args.slide).stem
    masks = MaskSamplingConfig(pixel_mapping={"background": 0, "tissue": 1},
                               colors={"background": None, "tissue": (157, 219, 129)},
                               min_coverage={"tissue": args.min_tissue})
    t0 = time.perf_counter()
    tile_slides(
        [SlideSpec(sample_id=sample, image_path=Path(args.slide))],
        tiling=TilingConfig(backend="openslide", mask_backend="openslide", requested_spacing_um=args.mpp,
                            requested_tile_size_px=args.size, tolerance=0.05, overlap=0.0),
        segmentation=SegmentationConfig(method="hsv"),
        masks=masks,
        preview=None,
        output_dir=out,
        num_workers=args.workers,
        save_tiles=True,
        jpeg_backend="pil",
    )
    seconds = time.perf_counter() - t0
    tar = next(out.rglob(f"{sample}.tiles.tar"))
    manifest = next(out.rglob(f"{sample}.tiles.manifest.csv"))
    coords = np.loadtxt(manifest, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)[:, 1:3]
    np.save(out / "coords.npy", coords)
    return {"tool": "hs2p", "version": version("hs2p") if hasattr(hs2p, "__version__") else "?",
            "tiles": int(len(coords)), "seconds": {"total": seconds}, "tile_output": str(tar.relative_to(out)),
            "tile_format": "one tar of JPEGs (hs2p save_tiles)"}


# ----------------------------------------------------------------------------------------
# LazySlide: find_tissues + tile_tissues, pixels through wsidata's torch dataset

class _LazySlideJpegs:
    """Wraps LazySlide's tile dataset: each item is read through it and saved as JPEG in the worker."""

    def __init__(self, dataset, folder: Path, quality: int):
        self.dataset, self.folder, self.quality = dataset, folder, quality

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        x, y = int(item["x"]), int(item["y"])
        _save_jpeg(item["image"], self.folder / f"{x}_{y}.jpg", self.quality)
        return x, y


def run_lazyslide(args) -> dict:
    import numpy as np
    from importlib.metadata import version
    from torch.utils.data import DataLoader

    import lazyslide as zs
    from wsidata import open_wsi

    out = Path(args.out)
    tiles_dir = out / "tiles"
    tiles_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wsi = open_wsi(args.slide, store=str(out / "slide.zarr"), reader="openslide")
    zs.pp.find_tissues(wsi)
    t1 = time.perf_counter()
    zs.pp.tile_tissues(wsi, args.size, mpp=args.mpp, background_fraction=1.0 - args.min_tissue)
    t2 = time.perf_counter()
    dataset = _LazySlideJpegs(wsi.ds.tile_images(), tiles_dir, args.jpeg_quality)
    loader = DataLoader(dataset, batch_size=64, num_workers=args.workers, collate_fn=lambda batch: batch)
    coords = [xy for batch in loader for xy in batch]
    t3 = time.perf_counter()
    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    np.save(out / "coords.npy", coords)
    return {"tool": "lazyslide", "version": version("lazyslide"), "tiles": int(len(coords)),
            "seconds": {"total": t3 - t0, "tissue": t1 - t0, "grid": t2 - t1, "tiles": t3 - t2},
            "tile_output": "tiles/", "tile_format": "one JPEG file per tile (written by the driver)"}


RUNNERS = {"hs2p": run_hs2p, "lazyslide": run_lazyslide}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tool", choices=sorted(RUNNERS))
    parser.add_argument("--slide", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min-tissue", type=float, default=0.5)
    parser.add_argument("--jpeg-quality", type=int, default=90)
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    summary = RUNNERS[args.tool](args)
    sys.stdout.flush()
    print("PEER_SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.exit(main())
