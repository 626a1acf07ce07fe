"""A views store whose interpolated images are pixel blends of their two tiles: a control for the
disentanglement task (does it need the generator's interpolations, or would mixup's do?).

Copies ``--views`` to ``--out`` and replaces each ``interp/images[j]`` with
``alpha_j * x1 + (1 - alpha_j) * x2`` (rounded to uint8), x1 and x2 the store's two source tiles of
``interp/pairs[j]`` brought to the store's image size as stage 3 brings real tiles (bicubic), alpha_j
the store's weight of the first tile. Pairs, alphas, generated views and attributes stay as they were,
so stage 3's disentanglement target (the alpha-mix of the two tiles' targets) is unchanged:

    python benchmarks/pixel_mix_views.py --views OUT/generator/views.h5 --tiles OUT/data/ssl \\
        --out OUT/sweep/pixel_mix/views.h5
    python benchmarks/quality_sweep.py --setting simclr_pixel_mix ssl.method=simclr gen.p=0 \\
        views=OUT/sweep/pixel_mix/views.h5
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from gensis.atomic import atomic_path
from gensis.data.tile_source import open_tiles


def blend(first: np.ndarray, second: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * first + (1 - alpha) * second of two uint8 images, rounded to uint8."""
    mixed = alpha * first.astype(np.float64) + (1 - alpha) * second.astype(np.float64)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=Path, required=True, help="a views store (gensis generate)")
    parser.add_argument("--tiles", type=Path, required=True, help="the tile source the store was drawn for")
    parser.add_argument("--out", type=Path, required=True, help="the new store (must not exist)")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new path")
    tiles = open_tiles(args.tiles)
    with atomic_path(args.out) as tmp:
        shutil.copyfile(args.views, tmp)
        with h5py.File(tmp, "r+") as store:
            keys = [k.decode() if isinstance(k, bytes) else str(k) for k in store["keys"][:]]
            if keys != list(tiles.keys):
                raise SystemExit(f"--tiles {args.tiles}: not the tiles {args.views} was drawn for (keys differ)")
            images, pairs, alpha = store["interp/images"], store["interp/pairs"][:], store["interp/alpha"][:]
            size = images.shape[1]

            def tile(index: int) -> np.ndarray:
                image = Image.fromarray(tiles.load(int(index)))
                if max(image.size) > size:
                    image = image.resize((size, size), Image.Resampling.BICUBIC)
                if image.size != (size, size):
                    raise SystemExit(f"--tiles {args.tiles}: tile {keys[index]} is {image.size[0]} x "
                                     f"{image.size[1]} px, the store's images {size} x {size}: give the tiles "
                                     f"the store was drawn for")
                return np.asarray(image.convert("RGB"))

            for j, ((first, second), a) in enumerate(zip(pairs, alpha)):
                images[j] = blend(tile(first), tile(second), float(a))
            store.attrs["interp_source"] = "pixel blend (benchmarks/pixel_mix_views.py)"
    print(f"{len(pairs)} pixel-blended interpolations -> {args.out}")


if __name__ == "__main__":
    main()
