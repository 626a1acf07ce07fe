"""Views between a tile and a near tile: mixing in the conditioning space (gensis/diffusion/neighbour_mix.py)."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from gensis.config.stage2 import GenerateParams
from gensis.data.views_store import ViewsPlan
from gensis.diffusion import generate_run
from gensis.diffusion.condition_noise import CONDITION_SEED_OFFSET, noise_condition
from gensis.diffusion.neighbour_mix import MIX_SEED_OFFSET, mix_views, nearest_neighbours

ABAR = torch.from_numpy(DDPMScheduler().alphas_cumprod.numpy())


def on_circle(degrees):
    """Unit vectors in the plane at these angles (their cosine order is their angle order)."""
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1).float()


def angle_of(v):
    return math.degrees(math.atan2(float(v[1]), float(v[0])))


def test_nearest_neighbours_are_the_closest_other_tiles_nearest_first():
    e = on_circle([0, 10, 25, 90, 100]) * torch.tensor([[1.0], [3.0], [0.5], [2.0], [1.0]])   # norms do not count
    expected = [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]]
    assert nearest_neighbours(e, 2).tolist() == expected
    assert nearest_neighbours(e, 2, chunk=2).tolist() == expected        # chunked alike
    assert nearest_neighbours(e[:2], 5).tolist() == [[1], [0]]          # k capped at the other tiles


def test_a_mixed_view_lies_on_the_arc_towards_its_chosen_neighbour():
    e = on_circle([0, 60, 170])
    neighbours = np.array([[1, 2], [0, 2], [1, 0]])
    for seed in range(20):
        rng = np.random.default_rng(seed + MIX_SEED_OFFSET)              # the documented draw: neighbour, then w
        j = int(neighbours[0][rng.integers(2)])
        w = rng.uniform(0.0, 0.5)
        view = mix_views(e, [0], neighbours, 0.5, [seed])[0]
        assert float(view.norm()) == pytest.approx(1.0, abs=1e-5)
        assert angle_of(view) == pytest.approx(w * (60 if j == 1 else 170), abs=1e-3)   # w of the arc, tile's side
    torch.testing.assert_close(mix_views(e, [1, 2], neighbours, 0.0, [3, 4]), e[1:])      # weight 0: the tile


def test_conditions_mix_views_before_noise_and_keep_interpolations_exact():
    plan = ViewsPlan(n_tiles=3, views_per_tile=2, interpolations=1, image_size=16, batch_size=8, seed=0,
                     sampler="ddim", steps=2, guidance_scale=1.0, alpha_low=0.0, alpha_high=1.0, encoder="",
                     diffusion="", keys_sha="", neighbour_mix=0.5, neighbours=2)
    e = torch.randn(3, 8)
    neighbours = nearest_neighbours(e, 2)
    pairs, alphas = np.array([[0, 1]]), np.array([1.0], dtype=np.float32)
    seeds = [10, 11, 12, 13, 14, 15, 16]
    rows = generate_run.conditions(plan, e, range(7), pairs, alphas, seeds=seeds, neighbours=neighbours)
    torch.testing.assert_close(rows[0], mix_views(e, [0], neighbours, 0.5, [10])[0])
    torch.testing.assert_close(rows[5], mix_views(e, [2], neighbours, 0.5, [15])[0])
    torch.testing.assert_close(rows[6], torch.nn.functional.normalize(e, dim=-1)[0])     # interpolation: exact
    noised = generate_run.conditions(plan, e, range(1), pairs, alphas, np.array([200, 200, 200]), ABAR, seeds,
                                     neighbours)
    expected = noise_condition(mix_views(e, [0], neighbours, 0.5, [10]), [200], ABAR, [10 + CONDITION_SEED_OFFSET])
    torch.testing.assert_close(noised, expected)


def test_mixing_is_validated_and_absent_from_plans_without_it():
    with pytest.raises(ValueError, match="neighbour_mix"):
        GenerateParams(neighbour_mix=1.5)
    with pytest.raises(ValueError, match="neighbours"):
        GenerateParams(neighbour_mix=0.5, neighbours=0)
    plan = dict(n_tiles=2, views_per_tile=1, interpolations=0, image_size=16, batch_size=8, seed=0, sampler="ddim",
                steps=2, guidance_scale=1.0, alpha_low=0.2, alpha_high=0.8, encoder="e", diffusion="d", keys_sha="k")
    assert json.loads(ViewsPlan(**plan).fingerprint()) == plan          # stores drawn before mixing still resume
    mixed = json.loads(ViewsPlan(**plan, neighbour_mix=0.5, neighbours=5).fingerprint())
    assert (mixed["neighbour_mix"], mixed["neighbours"]) == (0.5, 5)
