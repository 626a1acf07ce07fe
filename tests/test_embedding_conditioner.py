"""Embedding conditioning: token shapes, L2 normalisation, null-embedding dropout rate."""

import pytest
import torch

from gensis.models.embedding_conditioner import EmbeddingConditioner


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
