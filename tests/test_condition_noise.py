"""Views that differ, under control: noise on the condition (GenView's formula) and guidance below 1."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from gensis.config.diffusion import SamplerConfig
from gensis.config.stage2 import GenerateParams
from gensis.data.views_store import ViewsPlan
from gensis.diffusion import generate_run
from gensis.diffusion.condition_noise import CONDITION_SEED_OFFSET, adaptive_levels, noise_condition, tissue_share
from tests.test_stage2 import tiny_pipeline

ABAR = torch.from_numpy(DDPMScheduler().alphas_cumprod.numpy())


def test_noise_level_zero_gives_the_embedding_back_on_its_scale():
    e = torch.randn(4, 16)
    out = noise_condition(e, [0] * 4, ABAR, seeds=range(4))
    torch.testing.assert_close(torch.nn.functional.normalize(out, dim=-1), torch.nn.functional.normalize(e, dim=-1))


def test_noise_follows_the_ddpm_formula_with_the_images_seed():
    e = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))   # fixed: the last check is a constructed case
    out = noise_condition(e, [300, 999], ABAR, seeds=[7, 8])
    scaled = torch.nn.functional.normalize(e, dim=-1) * math.sqrt(16)   # unit variance per dimension
    for row, level, seed in zip(range(2), (300, 999), (7, 8)):
        eps = torch.randn(16, generator=torch.Generator().manual_seed(seed))
        abar = float(ABAR[level - 1])
        torch.testing.assert_close(out[row], math.sqrt(abar) * scaled[row] + math.sqrt(1 - abar) * eps)
    again = noise_condition(e, [300, 999], ABAR, seeds=[7, 8])
    torch.testing.assert_close(out, again)                                # reproducible from the seeds
    cos = torch.nn.functional.cosine_similarity(out, e, dim=-1)
    assert cos[0] > cos[1]                                                # more noise strays further


def test_adaptive_levels_scale_with_the_tissue_share():
    glass = np.full((8, 8, 3), 240, np.uint8)
    tissue = np.zeros((8, 8, 3), np.uint8)
    tissue[..., 0], tissue[..., 1], tissue[..., 2] = 200, 90, 160       # pink: saturated
    half = glass.copy()
    half[:4] = tissue[:4]
    shares = np.array([tissue_share(t) for t in (glass, half, tissue)])
    np.testing.assert_allclose(shares, [0.0, 0.5, 1.0])
    assert adaptive_levels(400, shares).tolist() == [0, 200, 400]


def test_generate_noises_views_only_and_keeps_interpolations_exact():
    plan = ViewsPlan(n_tiles=2, views_per_tile=2, interpolations=1, image_size=16, batch_size=8, seed=0,
                     sampler="ddim", steps=2, guidance_scale=1.0, alpha_low=0.0, alpha_high=1.0, encoder="",
                     diffusion="", keys_sha="", noise_level=200)
    e = torch.randn(2, 8)
    pairs, alphas = np.array([[0, 1]]), np.array([1.0], dtype=np.float32)
    seeds = [10, 11, 12, 13, 14]
    rows = generate_run.conditions(plan, e, range(5), pairs, alphas, np.array([200, 0]), ABAR, seeds)
    noised = noise_condition(e[:1], [200], ABAR, [10 + CONDITION_SEED_OFFSET])[0]
    torch.testing.assert_close(rows[0], noised)
    assert not torch.allclose(rows[0], rows[1])                           # each view its own noise
    torch.testing.assert_close(rows[2], e[1])                             # level 0 for tile 1: unchanged
    torch.testing.assert_close(rows[4], torch.nn.functional.normalize(e, dim=-1)[0])   # alpha 1: tile 0, exact
    with pytest.raises(ValueError, match="noise_level"):
        GenerateParams(noise_level=-1)


def test_guidance_below_one_weakens_the_condition_and_zero_ignores_it():
    pipe = tiny_pipeline()
    with torch.no_grad():
        pipe.conditioner.null_embedding.normal_()                         # a null embedding unlike any condition
    e = torch.randn(2, 8)
    draw = lambda g, emb: pipe(emb, 3, guidance_scale=g, seeds=[0, 1], output_type="pt").images  # noqa: E731
    torch.testing.assert_close(draw(0.0, e), draw(0.0, torch.randn(2, 8)))   # 0: the condition plays no part
    alone, none, half = draw(1.0, e), draw(0.0, e), draw(0.5, e)
    assert not torch.equal(alone, none)
    assert (half - none).abs().mean() < (alone - none).abs().mean()       # 0.5 lies between
    assert SamplerConfig(guidance=0.5).guidance == 0.5
    with pytest.raises(ValueError, match="sampler.guidance"):
        SamplerConfig(guidance=-0.1)


def test_stage2_training_conditions_are_noised_up_to_the_given_level():
    from gensis.diffusion.condition_noise import training_condition

    e = torch.randn(256, 16)
    assert training_condition(e, 0, ABAR) is e                           # off: the clean embeddings
    torch.manual_seed(0)
    light = torch.nn.functional.cosine_similarity(training_condition(e, 100, ABAR), e, dim=-1)
    heavy = torch.nn.functional.cosine_similarity(training_condition(e, 900, ABAR), e, dim=-1)
    assert light.min() > heavy.min() and light.mean() > heavy.mean()


def test_a_views_store_drawn_without_noise_keeps_its_earlier_fingerprint():
    """Stores drawn before the noise fields existed still match a plan without noise (they resume, not redraw)."""
    import json

    plan = dict(n_tiles=2, views_per_tile=1, interpolations=0, image_size=16, batch_size=8, seed=0, sampler="ddim",
                steps=2, guidance_scale=1.0, alpha_low=0.2, alpha_high=0.8, encoder="e", diffusion="d", keys_sha="k")
    assert json.loads(ViewsPlan(**plan).fingerprint()) == plan
    assert json.loads(ViewsPlan(**plan, noise_level=200).fingerprint())["noise_level"] == 200


def test_the_conditioner_centres_embeddings_that_share_a_common_direction(tmp_path):
    """Two tiles at cosine 0.98 (a shared direction plus a small own part): centred on the mean they point
    apart, so their tokens differ as much as those of unrelated embeddings; the centre survives save/load."""
    from gensis.models.embedding_conditioner import EmbeddingConditioner

    common = torch.zeros(8)
    common[0] = 1.0
    own = torch.zeros(2, 8)
    own[0, 1], own[1, 1] = 0.1, -0.1
    e = common + own                                                 # cosine between the two: 0.98
    center = torch.nn.functional.normalize(e, dim=-1).mean(0)
    plain = EmbeddingConditioner(8, 4).eval()
    centred = EmbeddingConditioner(8, 4, center=center.tolist()).eval()
    centred.load_state_dict(plain.state_dict())
    with torch.no_grad():
        unit = lambda c: torch.nn.functional.normalize(c(e).flatten(1) - c.project.bias, dim=-1)  # noqa: E731
        assert (unit(plain)[0] @ unit(plain)[1]) > 0.9                 # nearly one condition
        assert (unit(centred)[0] @ unit(centred)[1]) < -0.9            # opposite once centred
    centred.save_pretrained(tmp_path / "c")
    loaded = EmbeddingConditioner.from_pretrained(tmp_path / "c")
    torch.testing.assert_close(loaded.center_vector, center)
