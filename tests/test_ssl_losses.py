"""The losses of MoCo v3, BYOL and SimCLR and the mixed disentanglement target, each against its formula
written out here with plain loops (numpy, float64)."""

import math

import numpy as np
import torch

from gensis.losses.byol import byol_loss
from gensis.losses.info_nce import info_nce
from gensis.losses.mixed_target import mixed_target
from gensis.losses.nt_xent import nt_xent


def unit(v):
    return v / np.linalg.norm(v)


def test_info_nce_is_the_cross_entropy_of_each_query_against_all_keys():
    rng = np.random.default_rng(0)
    q, k, tau = rng.normal(size=(5, 7)), rng.normal(size=(5, 7)), 0.2
    expected = 0.0
    for i in range(5):
        logits = [unit(q[i]) @ unit(k[j]) / tau for j in range(5)]
        expected += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    expected /= 5
    got = info_nce(torch.tensor(q, requires_grad=True), torch.tensor(k), tau)
    assert math.isclose(got.item(), expected, rel_tol=1e-5)


def test_info_nce_sends_no_gradient_to_the_keys():
    q, k = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    info_nce(q, k, 0.2).backward()
    assert q.grad is not None and k.grad is None


def test_info_nce_is_low_when_each_query_matches_its_key_and_ln_n_when_all_keys_are_equal():
    keys = torch.eye(6)
    assert info_nce(keys * 10, keys, 0.05).item() < 1e-3
    assert math.isclose(info_nce(torch.randn(6, 6), torch.ones(6, 6), 0.2).item(), math.log(6), rel_tol=1e-5)


def test_nt_xent_over_the_two_n_anchors():
    rng = np.random.default_rng(1)
    z1, z2, tau = rng.normal(size=(4, 5)), rng.normal(size=(4, 5)), 0.5
    z = [unit(v) for v in np.concatenate([z1, z2])]
    total = 0.0
    for a in range(8):
        b = (a + 4) % 8
        denominator = sum(math.exp(z[a] @ z[c] / tau) for c in range(8) if c != a)
        total += -math.log(math.exp(z[a] @ z[b] / tau) / denominator)
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), tau)
    assert math.isclose(got.item(), total / 8, rel_tol=1e-5)


def test_nt_xent_passes_gradients_to_both_views():
    z1, z2 = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    nt_xent(z1, z2, 0.2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_byol_loss_is_two_minus_two_cosine():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], requires_grad=True)
    z = torch.tensor([[3.0, 0.0], [0.0, -1.0], [1.0, 0.0]], requires_grad=True)
    expected = np.mean([2 - 2 * 1.0, 2 - 2 * -1.0, 2 - 2 * (1 / math.sqrt(2))])   # cos = 1, -1, 1/sqrt 2
    loss = byol_loss(p, z)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    loss.backward()
    assert z.grad is None and p.grad is not None


def test_mixed_target_mixes_before_normalising():
    first, second = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 8.0]])
    target = mixed_target(first, second, torch.tensor([0.75]))
    expected = unit(np.array([0.75 * 2.0, 0.25 * 8.0]))                      # (1.5, 2.0) / 2.5
    np.testing.assert_allclose(target.numpy()[0], expected, rtol=1e-6)
    # normalising each source first would give (0.75, 0.25) / |.|: a different direction
    assert not np.allclose(expected, unit(np.array([0.75, 0.25])))
    assert not target.requires_grad


def test_per_row_weights_scale_each_rows_term():
    rng = np.random.default_rng(2)
    q, k = torch.tensor(rng.normal(size=(4, 5))), torch.tensor(rng.normal(size=(4, 5)))
    w = torch.tensor([2.0, 0.0, 1.0, 1.0])
    rows = [info_nce(q, k, 0.2, torch.eye(4)[i] * 4) for i in range(4)]       # each row alone (x 4 / 4)
    assert math.isclose(info_nce(q, k, 0.2, w).item(), sum(w[i].item() * rows[i].item() for i in range(4)) / 4,
                        rel_tol=1e-6)
    assert math.isclose(info_nce(q, k, 0.2, torch.ones(4)).item(), info_nce(q, k, 0.2).item(), rel_tol=1e-6)
    assert math.isclose(byol_loss(q, k, w).item(),
                        float(np.mean([w[i] * (2 - 2 * unit(q[i].numpy()) @ unit(k[i].numpy())) for i in range(4)])),
                        rel_tol=1e-6)
    assert math.isclose(nt_xent(q, k, 0.5, torch.ones(4)).item(), nt_xent(q, k, 0.5).item(), rel_tol=1e-6)
    assert nt_xent(q, k, 0.5, torch.tensor([4.0, 0, 0, 0])).item() != nt_xent(q, k, 0.5).item()
