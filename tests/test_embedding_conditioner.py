"""Embedding conditioning: token shapes, L2 normalisation, null-embedding dropout rate."""

import numpy as np
import pytest
import torch

from gensis.models.embedding_conditioner import EmbeddingConditioner, whitening_matrix


def test_tokens_shape_and_scale_invariance():
    cond = EmbeddingConditioner(embed_dim=12, cross_attention_dim=32, n_tokens=3).eval()
    e = torch.randn(5, 12)
    tokens = cond(e)
    assert tokens.shape == (5, 3, 32)
    torch.testing.assert_close(cond(e * 7.0), tokens)          # e is L2-normalised first


def test_conditioning_dropout_rate_and_eval_mode():
    torch.manual_seed(0)
    cond = EmbeddingConditioner(embed_dim=8, cross_attention_dim=4, p_uncond=0.1)
    with torch.no_grad():
        cond.null_embedding.fill_(0.5)
    e = torch.randn(20000, 8)
    null_tokens = cond(e[:1], drop=torch.tensor([True]))[0]
    tokens = cond.train()(e)
    dropped = (tokens - null_tokens).abs().amax(dim=(1, 2)) < 1e-6
    assert abs(dropped.float().mean().item() - 0.1) < 0.01
    assert not ((cond.eval()(e) - null_tokens).abs().amax(dim=(1, 2)) < 1e-6).any()   # never in eval


def test_null_embedding_learns_and_bad_probability_is_refused():
    cond = EmbeddingConditioner(embed_dim=8, cross_attention_dim=4, p_uncond=0.5)
    cond(torch.randn(4, 8), drop=torch.tensor([True, False, True, False])).sum().backward()
    assert cond.null_embedding.grad is not None and cond.null_embedding.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="p_uncond"):
        EmbeddingConditioner(8, 4, p_uncond=1.0)


def anisotropic_unit_embeddings(n=400, d=16, seed=0):
    """Unit embeddings around one common direction, spread mostly along one other direction and some along a
    second (as a small encoder's CLS embeddings: 95% and 3.5% of the variance for the quality recipe's)."""
    rng = np.random.default_rng(seed)
    scales = np.r_[1.0, 0.3, np.full(d - 2, 0.02)] * 0.1
    common = np.zeros(d)
    common[-1] = 1.0
    e = common + rng.standard_normal((n, d)) * scales
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_whitening_matrix_is_zca_with_the_mean_eigenvalue_as_shrinkage():
    e = anisotropic_unit_embeddings()
    center = e.mean(0)
    w = whitening_matrix(e, center)
    centred = e - center
    covariance = np.cov(centred, rowvar=False)
    lam, v = np.linalg.eigh(covariance)
    eps = lam.mean()
    np.testing.assert_allclose(w, w.T, atol=1e-10)
    # the whitened covariance is V diag(lambda / (lambda + eps)) V^T
    np.testing.assert_allclose(w @ covariance @ w.T, (v * (lam / (lam + eps))) @ v.T, atol=1e-8)
    # what it is for: the main direction no longer swamps the others
    before = np.sort(lam)[::-1]
    after = np.sort(np.linalg.eigvalsh(w @ covariance @ w.T))[::-1]
    assert before[0] / before[1] > 10 and after[0] / after[1] < 2


def test_whitened_condition_is_the_normalised_whitened_centred_embedding(tmp_path):
    e = anisotropic_unit_embeddings(n=50, d=8)
    center = e.mean(0)
    cond = EmbeddingConditioner(embed_dim=8, cross_attention_dim=4, center=center.tolist(), whiten=True).eval()
    w = torch.from_numpy(whitening_matrix(e, center)).float()
    cond.whiten_matrix.copy_(w)
    x = torch.from_numpy(e[:5]).float() * 3.0                       # any scale: e is L2-normalised first
    expected_input = torch.nn.functional.normalize((x / x.norm(dim=1, keepdim=True) - torch.from_numpy(center).float()) @ w,
                                                   dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(cond(x), cond.project(expected_input).view(5, 1, 4))
    cond.save_pretrained(tmp_path / "cond")                          # the matrix travels with the weights
    loaded = EmbeddingConditioner.from_pretrained(tmp_path / "cond")
    torch.testing.assert_close(loaded.whiten_matrix, w)
    with pytest.raises(ValueError, match="needs center"):
        EmbeddingConditioner(embed_dim=8, cross_attention_dim=4, whiten=True)
