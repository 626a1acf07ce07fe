"""Hard positives, progressively: views drawn at several condition-noise levels, and stage 3 taking the level
(or the share of generated views) from a schedule over the epochs."""

import csv
import math

import numpy as np
import pytest
import torch

from gensis.config.augment import AugmentConfig, CropConfig
from gensis.data.gen_dino_tiles import GenDINOTiles
from gensis.data.tile_source import open_tiles
from gensis.data.views_store import ViewsPlan, keys_sha
from gensis.diffusion.generate_run import conditions
from gensis.training.schedules import curriculum_progress
from tests.conftest import run_cli
from tests.test_stage3 import write_views


def test_the_schedule_runs_from_zero_at_the_first_epoch_to_one_at_the_last():
    assert [curriculum_progress(e, 5, "linear") for e in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    cosine = [curriculum_progress(e, 5, "cosine") for e in range(5)]
    expected = [0.0, (1 - math.cos(math.pi / 4)) / 2, 0.5, (1 - math.cos(3 * math.pi / 4)) / 2, 1.0]
    np.testing.assert_allclose(cosine, expected, atol=1e-12)


def test_views_at_several_levels_are_stored_level_by_level():
    plan = ViewsPlan(n_tiles=2, views_per_tile=6, interpolations=0, image_size=8, batch_size=4, seed=0, sampler="x",
                     steps=1, guidance_scale=1.0, alpha_low=0.2, alpha_high=0.8, encoder="e", diffusion="d",
                     keys_sha=keys_sha(["a", "b"]), noise_levels=(0, 100, 500))
    assert [plan.slot_level(slot) for slot in range(6)] == [0, 0, 100, 100, 500, 500]
    assert '"noise_levels": [0, 100, 500]' in plan.fingerprint()
    embeddings = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    alphas_cumprod = torch.linspace(0.9999, 0.01, 1000)
    rows = conditions(plan, embeddings, range(12), np.zeros((0, 2), np.int64), np.zeros(0), None, alphas_cumprod,
                      list(range(12)))
    for job in range(12):
        tile, slot = divmod(job, 6)
        same = torch.allclose(rows[job], embeddings[tile])
        assert same == (plan.slot_level(slot) == 0), job              # level 0: the clean embedding
    # more noise, further from the tile's embedding (cosine, on average over the two tiles)
    cos = lambda job: torch.nn.functional.cosine_similarity(rows[job], embeddings[job // 6], dim=0)  # noqa: E731
    assert np.mean([cos(j) for j in (2, 3, 8, 9)]) > np.mean([cos(j) for j in (4, 5, 10, 11)])


@pytest.fixture
def dataset_of(labeled_tiles, tmp_path):
    def make(noise_levels, p, curriculum):
        tiles = open_tiles(labeled_tiles)
        store = write_views(tmp_path / f"views{len(noise_levels)}.h5", tiles.keys, views_per_tile=2,
                            noise_levels=noise_levels)
        return GenDINOTiles(tiles, store, p, False, CropConfig(global_size=16, local_size=8, n_local=0),
                            AugmentConfig(), (0.5,) * 3, (0.5,) * 3, on_device=True, curriculum=curriculum)
    return make


def test_the_level_drawn_follows_the_schedule(dataset_of):
    dataset = dataset_of((0, 150, 300), p=1.0, curriculum="linear")
    torch.manual_seed(0)
    for progress, level, slots in ((0.0, 0, {0, 1}), (0.5, 150, {2, 3}), (0.9, 300, {4, 5}), (1.0, 300, {4, 5})):
        dataset.set_progress(progress)
        draws = [dataset.draw_view(6) for _ in range(50)]
        assert {d[2] for d in draws} == {level} and {d[1] for d in draws} == slots, progress
    free = dataset_of((0, 150, 300), p=1.0, curriculum="none")
    assert {free.draw_view(6)[2] for _ in range(200)} == {0, 150, 300}     # no curriculum: any level


def test_with_one_level_the_share_of_generated_views_rises(dataset_of):
    dataset = dataset_of((), p=0.8, curriculum="linear")
    torch.manual_seed(0)
    shares = []
    for progress in (0.0, 0.5, 1.0):
        dataset.set_progress(progress)
        shares.append(np.mean([dataset.draw_view(2)[0] for _ in range(2000)]))
    assert shares[0] == 0.0
    assert shares[1] == pytest.approx(0.4, abs=0.04) and shares[2] == pytest.approx(0.8, abs=0.04)


def test_stage3_trains_easy_to_hard(labeled_tiles, tmp_path):
    store = write_views(tmp_path / "views.h5", open_tiles(labeled_tiles).keys, noise_levels=(0, 150, 300))
    out = tmp_path / "run"
    result = run_cli("stage3", f"data.path={labeled_tiles}", f"views={store}", f"out={out}", "experiment=tiny",
                     "optim.epochs=3", "gen.p=1", "gen.curriculum=linear", "data.workers=2")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r.get("train/view_level")]
    by_epoch = {}
    for row in rows:
        by_epoch.setdefault(int(row["epoch"]), set()).add(float(row["train/view_level"]))
    assert by_epoch == {0: {0.0}, 1: {150.0}, 2: {300.0}}               # through the loader's worker processes
