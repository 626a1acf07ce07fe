"""DINO pieces against the paper's formulas: loss with centring, head, schedules, augmentations."""

import numpy as np
import pytest
import torch
from PIL import Image

from gensis.data.augment import CropConfig, MultiCropAugment
from gensis.data.hed_jitter import HEDJitter
from gensis.losses.dino import DINOLoss
from gensis.models.dino_head import DINOHead
from gensis.training.schedules import cosine_schedule, teacher_temperature_schedule


def reference_dino_loss(student, teacher, center, n_crops, n_global, tau_s, tau_t):
    """Eq. 1 of Caron et al. written out: mean over (global t, crop s != t) of -sum P_t log P_s."""
    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    batch = teacher.shape[0] // n_global
    total, terms = 0.0, 0
    for t in range(n_global):
        p_t = softmax((teacher[t * batch:(t + 1) * batch] - center) / tau_t)
        for s in range(n_crops):
            if s == t:
                continue
            log_p_s = np.log(softmax(student[s * batch:(s + 1) * batch] / tau_s))
            total += (-(p_t * log_p_s).sum(axis=1)).mean()
            terms += 1
    return total / terms


def test_dino_loss_matches_the_formula_and_updates_the_centre():
    rng = np.random.default_rng(0)
    batch, k, n_crops = 3, 7, 4
    student = rng.normal(size=(n_crops * batch, k))
    teacher = rng.normal(size=(2 * batch, k))
    center = rng.normal(size=(1, k)) * 0.1
    loss = DINOLoss(k, student_temp=0.1, center_momentum=0.9)
    loss.center.copy_(torch.tensor(center, dtype=torch.float32))
    value = loss(torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32),
                 n_crops=n_crops, teacher_temp=0.04)
    expected = reference_dino_loss(student, teacher, center, n_crops, 2, 0.1, 0.04)
    assert value.item() == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(loss.center.numpy(), 0.9 * center + 0.1 * teacher.mean(axis=0, keepdims=True),
                               rtol=1e-5, atol=1e-6)


def test_dino_loss_gradient_flows_to_student_only():
    loss = DINOLoss(5)
    student = torch.randn(8, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    loss(student, teacher, n_crops=4, teacher_temp=0.04).backward()
    assert student.grad is not None and teacher.grad is None


def test_head_shapes_and_normalised_last_layer():
    head = DINOHead(16, out_dim=32, hidden_dim=24, bottleneck_dim=8)
    assert head(torch.randn(5, 16)).shape == (5, 32)
    weight = head.last_layer.weight
    np.testing.assert_allclose(weight.norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    free = DINOHead(16, out_dim=32, hidden_dim=24, bottleneck_dim=8, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_schedules_endpoints():
    lr = cosine_schedule(1e-3, 1e-6, epochs=10, steps_per_epoch=5, warmup_epochs=2)
    assert len(lr) == 50
    assert lr[0] == 0.0 and lr[10] == pytest.approx(1e-3) and lr[-1] == pytest.approx(1e-6)
    assert np.all(np.diff(lr[:10]) > 0) and np.all(np.diff(lr[10:]) <= 0)
    momentum = cosine_schedule(0.996, 1.0, epochs=3, steps_per_epoch=4)
    assert momentum[0] == pytest.approx(0.996) and momentum[-1] == pytest.approx(1.0)
    temps = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=3, epochs=5)
    assert list(np.round(temps, 3)) == [0.04, 0.055, 0.07, 0.07, 0.07]


def test_hed_jitter_is_identity_without_jitter_and_changes_stain_otherwise():
    image = torch.rand(3, 16, 16) * 0.8 + 0.1
    torch.testing.assert_close(HEDJitter(sigma=0, bias=0, p=1)(image), image, atol=1e-5, rtol=0)
    assert (HEDJitter(sigma=0.1, bias=0.02, p=1)(image) - image).abs().mean() > 1e-3


def test_multicrop_gives_global_then_local_crops():
    crops = MultiCropAugment(CropConfig(n_global=2, n_local=3, global_size=32, local_size=16))(
        Image.new("RGB", (64, 64), (200, 120, 160)))
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(c.dtype == torch.float32 for c in crops)


def test_sample_weights_count_each_samples_terms_that_many_times():
    """Weights (2, 0) over a batch of two equal the loss of the first sample alone."""
    torch.manual_seed(0)
    loss = DINOLoss(out_dim=8)
    n_crops, b = 4, 2
    student, teacher = torch.randn(n_crops * b, 8), torch.randn(2 * b, 8)
    first = lambda x, n: torch.cat([chunk[:1] for chunk in x.chunk(n)])   # noqa: E731  sample 0 of each crop
    alone = loss(first(student, n_crops), first(teacher, 2), n_crops, 0.04, update_center=False)
    weighted = loss(student, teacher, n_crops, 0.04, update_center=False, sample_weights=torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(weighted, alone)
    plain = loss(student, teacher, n_crops, 0.04, update_center=False)
    torch.testing.assert_close(loss(student, teacher, n_crops, 0.04, update_center=False,
                                    sample_weights=torch.ones(b)), plain)
