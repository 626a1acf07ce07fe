"""benchmarks/interp_controls.py: control stores for the disentanglement task (what its images show)."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from tests.conftest import BENCHMARKS, HANG_GUARD_S, load_benchmark
from tests.test_stage3 import write_views

SCRIPT = BENCHMARKS / "interp_controls.py"


def control(views, out, *args):
    return subprocess.run([sys.executable, str(SCRIPT), "--views", str(views), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


@pytest.fixture
def solid_tiles(tmp_path):
    """Six 32 px tiles, each one solid colour (tile i: grey level 40 i + 10), and a 16 px views store for them."""
    root = tmp_path / "tiles"
    root.mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i + 10,) * 3).save(root / f"t{i}.png")
    keys = [f"t{i}.png" for i in range(6)]
    return root, write_views(tmp_path / "views.h5", keys, views_per_tile=1, interpolations=40, size=16)


def level(index):
    return 40 * int(index) + 10


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_derangement_is_a_permutation_without_fixed_points(n):
    derangement = load_benchmark("interp_controls").derangement
    for seed in range(20):
        order = derangement(n, seed)
        assert sorted(order.tolist()) == list(range(n))
        assert not np.any(order == np.arange(n))
    assert not np.array_equal(derangement(50, 0), derangement(50, 1))   # the seed matters


def test_third_tiles_are_never_of_the_pair_and_cover_the_rest_evenly():
    third_tiles = load_benchmark("interp_controls").third_tiles
    pairs = np.array([[1, 3]] * 3000 + [[4, 0]] * 3000 + [[2, 2]] * 3000)
    chosen = third_tiles(pairs, 5, seed=0)
    for block, allowed in ((chosen[:3000], {0, 2, 4}), (chosen[3000:6000], {1, 2, 3}),
                           (chosen[6000:], {0, 1, 3, 4})):
        counts = np.bincount(block, minlength=5)
        assert set(np.flatnonzero(counts)) == allowed
        expected = len(block) / len(allowed)                              # uniform over the allowed tiles
        assert all(abs(counts[k] - expected) < 5 * np.sqrt(expected) for k in allowed)


def test_shuffled_moves_each_image_to_another_pair_and_keeps_the_targets(tmp_path):
    keys = [f"tile{i}" for i in range(5)]
    views = write_views(tmp_path / "views.h5", keys, views_per_tile=2, interpolations=9)
    out = tmp_path / "shuffled" / "views.h5"
    result = control(views, out, "--image", "shuffled", "--seed", "3")
    assert result.returncode == 0, result.stderr
    with h5py.File(views) as old, h5py.File(out) as new:
        for name in ("interp/pairs", "interp/alpha", "generated", "keys"):
            assert np.array_equal(old[name][:], new[name][:]), name
        before, after = old["interp/images"][:], new["interp/images"][:]
    assert len({image.tobytes() for image in before}) == len(before)   # noise images: each one identifiable
    source = [next(k for k in range(len(before)) if np.array_equal(after[j], before[k])) for j in range(len(after))]
    assert sorted(source) == list(range(len(before)))                   # every image kept, once
    assert all(k != j for j, k in enumerate(source))                    # none left with its own pair


@pytest.mark.parametrize("image", ["blend", "third", "nearer"])
def test_real_tile_images_follow_their_rule_and_keep_the_targets(solid_tiles, tmp_path, image):
    tiles, views = solid_tiles
    out = tmp_path / image / "views.h5"
    result = control(views, out, "--image", image, "--tiles", str(tiles))
    assert result.returncode == 0, result.stderr
    with h5py.File(views) as old, h5py.File(out) as new:
        for name in ("interp/pairs", "interp/alpha", "generated", "keys"):
            assert np.array_equal(old[name][:], new[name][:]), name
        pairs, alpha, images = new["interp/pairs"][:], new["interp/alpha"][:], new["interp/images"][:]
    assert images.shape == (40, 16, 16, 3)
    for (first, second), a, picture in zip(pairs, alpha, images):
        assert np.ptp(picture) == 0                                     # a solid tile stays solid when resized
        value = int(picture[0, 0, 0])
        if image == "blend":
            assert value == round(a * level(first) + (1 - a) * level(second))
        elif image == "nearer":
            assert value == level(first if a >= 0.5 else second)
        else:
            assert value in {level(k) for k in range(6)} - {level(first), level(second)}


def test_tiles_of_another_store_are_refused_in_one_line(solid_tiles, tmp_path):
    tiles, _ = solid_tiles
    views = write_views(tmp_path / "other.h5", ["a.png", "b.png", "c.png"], interpolations=4, size=16)
    out = tmp_path / "out.h5"
    result = control(views, out, "--image", "blend", "--tiles", str(tiles))
    assert result.returncode != 0 and str(views) in result.stderr and "another tile source" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("args, says", [(["--image", "third"], "give --tiles"),
                                        (["--image", "shuffled", "--tiles", "TILES"], "takes no --tiles")])
def test_tiles_missing_or_not_wanted_are_named_in_one_line(solid_tiles, tmp_path, args, says):
    tiles, views = solid_tiles
    out = tmp_path / "out.h5"
    result = control(views, out, *[str(tiles) if a == "TILES" else a for a in args])
    assert result.returncode != 0 and says in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_file_that_is_not_a_views_store_is_refused_in_one_line(solid_tiles, tmp_path):
    tiles, _ = solid_tiles
    views = tmp_path / "views.h5"
    views.write_bytes(b"not hdf5")
    out = tmp_path / "out.h5"
    for args in (["--image", "shuffled"], ["--image", "blend", "--tiles", str(tiles)]):
        result = control(views, out, *args)
        assert result.returncode != 0 and str(views) in result.stderr and "Traceback" not in result.stderr
        assert not out.exists()


def test_an_existing_output_is_refused_and_left_as_it_was(tmp_path):
    views = write_views(tmp_path / "views.h5", ["a", "b", "c"], interpolations=4)
    out = tmp_path / "out.h5"
    out.write_bytes(b"earlier work")
    result = control(views, out, "--image", "shuffled")
    assert result.returncode != 0 and str(out) in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == b"earlier work"
