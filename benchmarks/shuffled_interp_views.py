"""A views store whose interpolated images are shuffled across pairs: a control for the disentanglement task
(does its gain need the image to show the pair its target is made of?).

Copies ``--views`` to ``--out`` and moves each ``interp/images[j]`` to pair ``d(j)``, d a derangement drawn
with ``--seed`` (Sattolo's algorithm: one cycle through all M images, so no image stays with its own pair).
Pairs, alphas, generated views and attributes stay as they were, so stage 3's disentanglement target (the
alpha-mix of the two tiles' targets) is unchanged while the image it is asked of now shows another pair:

    python benchmarks/shuffled_interp_views.py --views OUT/sweep/simclr_genp0_short/views.h5 \\
        --out OUT/sweep/simclr_genp0_short_shuffled/views.h5
    python benchmarks/quality_sweep.py --setting simclr_genp0_short_shuffled ssl.method=simclr gen.p=0 \\
        views=OUT/sweep/simclr_genp0_short_shuffled/views.h5
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import h5py
import numpy as np

from gensis.atomic import atomic_path


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=Path, required=True, help="a views store (gensis generate)")
    parser.add_argument("--out", type=Path, required=True, help="the new store (must not exist)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the derangement")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new path")
    if not args.views.is_file():
        raise SystemExit(f"--views {args.views}: no such file; give a views store written by gensis generate")
    with atomic_path(args.out) as tmp:
        shutil.copyfile(args.views, tmp)
        with h5py.File(tmp, "r+") as store:
            if "interp/images" not in store or len(store["interp/images"]) < 2:
                raise SystemExit(f"--views {args.views}: fewer than 2 interpolated images, nothing to shuffle")
            images = store["interp/images"]
            originals = images[:]
            # image of pair j goes to pair order[j]: new[order[j]] = old[j]
            order = derangement(len(originals), args.seed)
            shuffled = np.empty_like(originals)
            shuffled[order] = originals
            images[...] = shuffled
            store.attrs["interp_source"] = f"shuffled across pairs, seed {args.seed} (benchmarks/shuffled_interp_views.py)"
    print(f"{len(originals)} interpolated images shuffled across pairs -> {args.out}")


if __name__ == "__main__":
    main()
