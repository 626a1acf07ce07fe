"""Control stores for stage 3's disentanglement task: what must its interpolated images show?

Copies the views store ``--views`` to ``--out`` and replaces each interpolated image ``interp/images[j]``
with, by ``--image``:

- ``blend``: mixup's image ``alpha_j * x1 + (1 - alpha_j) * x2`` (rounded to uint8) of the pair's two tiles;
- ``third``: a real tile that is neither of the pair, drawn uniformly with ``--seed``;
- ``nearer``: the pair's tile the target leans to (the first if alpha_j >= 0.5, else the second);
- ``shuffled``: the generated image of another pair, moved by a derangement drawn with ``--seed`` (Sattolo's
  algorithm: one cycle through all M images, so none stays with its pair; needs no ``--tiles``).

x1, x2 are the tiles of ``interp/pairs[j]`` in ``--tiles`` (the tile source the store was drawn for), brought to
the store's image size as stage 3 brings real tiles (bicubic); alpha_j the store's weight of the first tile.
Pairs, alphas, generated views and attributes stay as they were, so the task's target (the alpha-mix of the two
tiles' targets) is unchanged while the image it is asked of changes:

    python benchmarks/interp_controls.py --image third --views OUT/sweep/simclr_genp0_short/views.h5 \\
        --tiles OUT/data/ssl --out OUT/sweep/simclr_genp0_short_third/views.h5
    python benchmarks/quality_sweep.py --setting simclr_genp0_short_third ssl.method=simclr gen.p=0 \\
        views=OUT/sweep/simclr_genp0_short_third/views.h5
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
from gensis.data.views_store import check_views_store
from gensis.errors import GensisError

IMAGES = ("blend", "third", "nearer", "shuffled")


def blend(first: np.ndarray, second: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * first + (1 - alpha) * second of two uint8 images, rounded to uint8."""
    mixed = alpha * first.astype(np.float64) + (1 - alpha) * second.astype(np.float64)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (Sattolo's algorithm; n >= 2)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    order = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))   # j < i: Sattolo's, not Fisher-Yates' j <= i
        order[i], order[j] = order[j], order[i]
    return order


def third_tiles(pairs: np.ndarray, n_tiles: int, seed: int) -> np.ndarray:
    """For each pair (a, b), a tile index drawn uniformly from range(n_tiles) without a and b."""
    if n_tiles < 3:
        raise ValueError(f"a third tile needs at least 3 tiles, got {n_tiles}")
    rng = np.random.default_rng(seed)
    chosen = np.empty(len(pairs), np.int64)
    for j, (a, b) in enumerate(pairs):
        low, high = sorted((int(a), int(b)))
        k = int(rng.integers(0, n_tiles - (2 if low != high else 1)))
        k += k >= low                     # skip the pair's indices, in increasing order
        k += low != high and k >= high
        chosen[j] = k
    return chosen


def store_keys(views: Path) -> list[str]:
    """The tile keys a views store was drawn for."""
    try:
        with h5py.File(views, "r") as store:
            return [k.decode() if isinstance(k, bytes) else str(k) for k in store["keys"][:]]
    except (OSError, KeyError) as err:
        raise GensisError(f"--views {views}: not a views store ({err}); give one written by gensis generate") from None


def replace_images(store: h5py.File, image: str, tiles, seed: int) -> None:
    """Write the control's interpolated images into an open (copied) views store."""
    images, pairs, alpha = store["interp/images"], store["interp/pairs"][:], store["interp/alpha"][:]
    if image == "shuffled":
        originals = images[:]
        shuffled = np.empty_like(originals)
        shuffled[derangement(len(originals), seed)] = originals   # pair j's image goes to pair order[j]
        images[...] = shuffled
        return
    size, keys = images.shape[1], list(tiles.keys)

    def tile(index: int) -> np.ndarray:
        picture = Image.fromarray(tiles.load(int(index)))
        if max(picture.size) > size:
            picture = picture.resize((size, size), Image.Resampling.BICUBIC)
        if picture.size != (size, size):
            raise GensisError(f"tile {keys[index]} is {picture.size[0]} x {picture.size[1]} px, the store's "
                              f"images {size} x {size}: give the tiles the store was drawn for")
        return np.asarray(picture.convert("RGB"))

    thirds = third_tiles(pairs, len(keys), seed) if image == "third" else None
    for j, ((first, second), a) in enumerate(zip(pairs, alpha)):
        if image == "blend":
            images[j] = blend(tile(first), tile(second), float(a))
        elif image == "third":
            images[j] = tile(thirds[j])
        else:
            images[j] = tile(first if a >= 0.5 else second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", choices=IMAGES, required=True, help="what each interpolated image becomes")
    parser.add_argument("--views", type=Path, required=True, help="a views store (gensis generate)")
    parser.add_argument("--tiles", type=Path, help="the tile source the store was drawn for (not for shuffled)")
    parser.add_argument("--out", type=Path, required=True, help="the new store (must not exist)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (third, shuffled)")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new path")
    if not args.views.is_file():
        raise SystemExit(f"--views {args.views}: no such file; give a views store written by gensis generate")
    if (args.image == "shuffled") != (args.tiles is None):
        raise SystemExit(f"--image {args.image}: " + ("takes no --tiles" if args.tiles else
                                                      "give --tiles, the tile source the store was drawn for"))
    try:
        tiles = open_tiles(args.tiles) if args.tiles else None
        keys = list(tiles.keys) if tiles is not None else store_keys(args.views)
        check_views_store(args.views, keys, need_views=False, need_interpolations=True,
                          source=str(args.tiles or args.views))
        with h5py.File(args.views, "r") as store:
            n = len(store["interp/images"])
        if args.image == "shuffled" and n < 2:
            raise GensisError(f"--views {args.views}: {n} interpolated image, shuffled needs at least 2")
        if args.image == "third" and len(keys) < 3:
            raise GensisError(f"--views {args.views}: {len(keys)} tiles, a third tile needs at least 3")
        with atomic_path(args.out) as tmp:
            shutil.copyfile(args.views, tmp)
            with h5py.File(tmp, "r+") as store:
                replace_images(store, args.image, tiles, args.seed)
                store.attrs["interp_source"] = f"{args.image}, seed {args.seed} (benchmarks/interp_controls.py)"
    except GensisError as error:
        raise SystemExit(str(error)) from None
    print(f"{n} interpolated images replaced ({args.image}) -> {args.out}")


if __name__ == "__main__":
    main()
