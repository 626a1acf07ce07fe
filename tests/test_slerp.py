"""slerp: unit norm, endpoints, symmetry at alpha = 0.5, constant angular speed."""

import torch

from gensis.diffusion.slerp import slerp


def test_slerp_endpoints_norm_and_symmetry():
    torch.manual_seed(0)
    e1, e2 = torch.randn(16, 32), torch.randn(16, 32)
    n1, n2 = torch.nn.functional.normalize(e1, dim=1), torch.nn.functional.normalize(e2, dim=1)
    torch.testing.assert_close(slerp(e1, e2, 1.0), n1, atol=1e-5, rtol=0)
    torch.testing.assert_close(slerp(e1, e2, 0.0), n2, atol=1e-5, rtol=0)
    alphas = torch.rand(16)
    torch.testing.assert_close(slerp(e1, e2, alphas).norm(dim=1), torch.ones(16), atol=1e-5, rtol=0)
    middle = slerp(e1, e2, 0.5)
    torch.testing.assert_close(middle, slerp(e2, e1, 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close((middle * n1).sum(1), (middle * n2).sum(1), atol=1e-5, rtol=0)


def test_slerp_moves_at_constant_angle_and_handles_parallel_pairs():
    e1, e2 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    for alpha in (0.1, 0.3, 0.8):
        angle_to_e2 = torch.arccos(slerp(e1, e2, alpha)[0, 2].clamp(-1, 1))
        assert abs(angle_to_e2.item() - alpha * torch.pi / 2) < 1e-5
    same = slerp(e1, e1 * 3, 0.4)
    torch.testing.assert_close(same, e1)
    assert torch.isfinite(same).all()
