"""benchmarks/shuffled_interp_views.py: the shuffled-pairs control store for the disentanglement task."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S
from tests.test_stage3 import write_views

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "shuffled_interp_views.py"


def load_script():
    spec = importlib.util.spec_from_file_location("shuffled_interp_views", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_derangement_is_a_permutation_without_fixed_points(n):
    derangement = load_script().derangement
    for seed in range(20):
        order = derangement(n, seed)
        assert sorted(order.tolist()) == list(range(n))
        assert not np.any(order == np.arange(n))
    assert not np.array_equal(derangement(50, 0), derangement(50, 1))   # the seed matters


def shuffle(views, out, *args):
    return subprocess.run([sys.executable, str(SCRIPT), "--views", str(views), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_each_image_moves_to_another_pair_and_the_targets_stay(tmp_path):
    keys = [f"tile{i}" for i in range(5)]
    views = write_views(tmp_path / "views.h5", keys, views_per_tile=2, interpolations=9)
    out = tmp_path / "shuffled" / "views.h5"
    result = shuffle(views, out, "--seed", "3")
    assert result.returncode == 0, result.stderr
    with h5py.File(views) as old, h5py.File(out) as new:
        for name in ("interp/pairs", "interp/alpha", "generated", "keys"):
            assert np.array_equal(old[name][:], new[name][:]), name
        before, after = old["interp/images"][:], new["interp/images"][:]
    assert len({image.tobytes() for image in before}) == len(before)   # noise images: each one identifiable
    source = [next(k for k in range(len(before)) if np.array_equal(after[j], before[k])) for j in range(len(after))]
    assert sorted(source) == list(range(len(before)))                   # every image kept, once
    assert all(k != j for j, k in enumerate(source))                    # none left with its own pair


def test_an_existing_output_is_refused_and_left_as_it_was(tmp_path):
    views = write_views(tmp_path / "views.h5", ["a", "b", "c"], interpolations=4)
    out = tmp_path / "out.h5"
    out.write_bytes(b"earlier work")
    result = shuffle(views, out)
    assert result.returncode != 0 and str(out) in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == b"earlier work"
