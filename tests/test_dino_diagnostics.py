"""Is DINO learning: the diagnostics against their formulas, and the options meant to make it learn."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gensis.config.augment import AugmentConfig, CropConfig, blur_sigma_range
from gensis.data.augment import augmented_view
from gensis.data.batch_augment import BatchMultiCrop
from gensis.losses.dino_diagnostics import teacher_entropy, teacher_student_kl, view_agreement
from gensis.models.dino_head import DINOHead
from gensis.training.schedules import teacher_temperature_schedule


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_entropy_is_ln_k_for_uniform_targets_zero_for_one_hot_and_the_formula_otherwise():
    k = 16
    assert teacher_entropy(torch.full((3, k), 1 / k)).item() == pytest.approx(math.log(k), rel=1e-6)
    assert teacher_entropy(torch.eye(k)[:4]).item() == pytest.approx(0.0, abs=1e-6)
    p = softmax(np.random.default_rng(0).normal(size=(5, k)))
    expected = np.mean([-sum(pi * math.log(pi) for pi in row) for row in p])
    assert teacher_entropy(torch.tensor(p)).item() == pytest.approx(expected, rel=1e-6)


def test_kl_is_zero_for_matching_predictions_and_the_formula_otherwise():
    rng = np.random.default_rng(1)
    logits, tau_s = rng.normal(size=(4, 9)), 0.1
    same = torch.tensor(softmax(logits / tau_s))
    assert teacher_student_kl(same, torch.tensor(logits), tau_s).item() == pytest.approx(0.0, abs=1e-6)
    p, q = softmax(rng.normal(size=(4, 9))), softmax(logits / tau_s)
    expected = np.mean([sum(pi * math.log(pi / qi) for pi, qi in zip(pr, qr)) for pr, qr in zip(p, q)])
    assert teacher_student_kl(torch.tensor(p), torch.tensor(logits), tau_s).item() == pytest.approx(expected, rel=1e-5)


def test_view_agreement_is_the_mean_pearson_correlation_of_two_views():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 20)), rng.normal(size=(6, 20))
    assert view_agreement(torch.tensor(a), torch.tensor(3 * a + 1)).item() == pytest.approx(1.0, abs=1e-6)
    assert view_agreement(torch.tensor(a), torch.tensor(-a)).item() == pytest.approx(-1.0, abs=1e-6)
    expected = np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])
    assert view_agreement(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(expected, rel=1e-6)


def test_teacher_temperature_warms_up_from_below():
    temps = teacher_temperature_schedule(0.02, 0.04, warmup_epochs=2, epochs=5)
    assert temps[0] == pytest.approx(0.02) and temps[1] == pytest.approx(0.04) and temps[-1] == pytest.approx(0.04)


def test_head_batch_norm_normalises_each_hidden_unit_over_the_batch():
    torch.manual_seed(0)
    head = DINOHead(8, out_dim=16, hidden_dim=12, bottleneck_dim=4, batch_norm=True).train()
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == 2  # after each hidden layer
    seen = []
    head.mlp[1].register_forward_hook(lambda module, inputs, output: seen.append(output))
    head(torch.randn(64, 8) * 5 + 3)
    np.testing.assert_allclose(seen[0].mean(0).detach().numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(seen[0].std(0, unbiased=False).detach().numpy(), 1.0, atol=1e-3)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in DINOHead(8, 16, 12, 4).modules())


def test_strength_scales_colour_ranges_and_chances():
    scaled = AugmentConfig(strength=0.5).at_strength()
    base = AugmentConfig()
    assert scaled.brightness == pytest.approx(base.brightness / 2) and scaled.hue == pytest.approx(base.hue / 2)
    assert scaled.grayscale == pytest.approx(base.grayscale / 2) and scaled.solarize == pytest.approx(base.solarize / 2)
    assert scaled.strength == 1.0 and scaled.hed_jitter == base.hed_jitter  # stain jitter is not colour jitter
    with pytest.raises(ValueError, match="augment.strength"):
        AugmentConfig(strength=-1)


def test_strength_zero_leaves_colours_alone():
    """With every colour change at full chance, strength 0 gives the plain normalised tile back
    (a tile of one colour, so that the random crop itself changes nothing)."""
    colour = (200, 120, 160)
    image = Image.new("RGB", (16, 16), colour)
    loud = dict(flip=False, rotate90=False, color_jitter=1.0, grayscale=1.0, hed_jitter=0.0, blur=False)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    plain = ((torch.tensor(colour, dtype=torch.float32) / 255 - 0.5) / 0.25)[:, None, None].expand(3, 16, 16)
    for strength, same in ((0.0, True), (1.0, False)):
        torch.manual_seed(0)
        view = augmented_view(16, (0.5, 1.0), AugmentConfig(strength=strength, **loud), 0.0, 1.0, mean, std)
        assert torch.allclose(view(image), plain, atol=1e-4) is same
        batched = BatchMultiCrop(CropConfig(n_global=2, n_local=1, global_size=16, local_size=8),
                                 AugmentConfig(strength=strength, solarize=1.0, **loud), mean, std)
        crops = batched(torch.tensor(colour, dtype=torch.uint8)[None, :, None, None].expand(1, 3, 16, 16))
        assert all(torch.allclose(c[0], plain[:, :c.shape[-1], :c.shape[-1]], atol=1e-4) is same for c in crops)


def test_blur_sigma_is_dinos_range_scaled_to_the_global_crop():
    assert blur_sigma_range(224) == pytest.approx((0.1, 2.0))
    assert blur_sigma_range(32) == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))
