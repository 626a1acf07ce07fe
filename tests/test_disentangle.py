"""The disentanglement loss (METHOD.md stage 4) against its formula on fixed tensors."""

import numpy as np
import pytest
import torch

from gensis.losses.dino import DINOLoss
from gensis.losses.disentangle import DisentanglementLoss


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference(student, first, second, alpha, center, tau_s, tau_t):
    """t = softmax((a g1 + (1 - a) g2 - c) / tau_t); L = -mean_b sum_k t_k log softmax(s / tau_s)_k."""
    mixed = alpha[:, None] * first + (1 - alpha[:, None]) * second
    target = softmax((mixed - center) / tau_t)
    return float((-(target * np.log(softmax(student / tau_s))).sum(axis=1)).mean())


@pytest.fixture
def tensors():
    rng = np.random.default_rng(1)
    b, k = 5, 9
    return (rng.normal(size=(b, k)), rng.normal(size=(b, k)), rng.normal(size=(b, k)), rng.uniform(0, 1, size=b),
            rng.normal(size=(1, k)) * 0.3)


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_loss_matches_the_formula(tensors):
    student, first, second, alpha, center = tensors
    value = DisentanglementLoss(0.1)(t(student), t(first), t(second), t(alpha), t(center), teacher_temp=0.04)
    assert value.item() == pytest.approx(reference(student, first, second, alpha, center, 0.1, 0.04), rel=1e-4)


def test_alpha_one_is_the_dino_loss_on_the_first_view(tensors):
    student, first, second, _, center = tensors
    dino = DINOLoss(first.shape[1], student_temp=0.1)
    dino.center.copy_(t(center))
    ones = torch.ones(len(student))
    value = DisentanglementLoss(0.1)(t(student), t(first), t(second), ones, dino.center, teacher_temp=0.04)
    # the DINO loss with one global crop (the first source) as teacher and the interpolated view as student
    expected = dino(torch.cat([t(first), t(student)]), t(first), n_crops=2, teacher_temp=0.04, update_center=False)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mixing_happens_before_centring_and_sharpening(tensors):
    student, first, second, _, center = tensors
    half = np.full(len(student), 0.5)
    value = DisentanglementLoss(0.1)(t(student), t(first), t(second), t(half), t(center), teacher_temp=0.04)
    # mixing the two sharpened targets instead gives another (wrong) value
    mixed_after = 0.5 * softmax((first - center) / 0.04) + 0.5 * softmax((second - center) / 0.04)
    wrong = float((-(mixed_after * np.log(softmax(student / 0.1))).sum(axis=1)).mean())
    assert value.item() == pytest.approx(reference(student, first, second, half, center, 0.1, 0.04), rel=1e-4)
    assert abs(value.item() - wrong) > 1e-2


def test_gradient_reaches_the_student_only_and_the_centre_stays(tensors):
    student, first, second, alpha, center = tensors
    s = t(student).requires_grad_()
    g1, g2 = t(first).requires_grad_(), t(second).requires_grad_()
    c = t(center)
    DisentanglementLoss(0.1)(s, g1, g2, t(alpha), c, teacher_temp=0.04).backward()
    assert s.grad is not None and g1.grad is None and g2.grad is None
    assert torch.equal(c, t(center))
