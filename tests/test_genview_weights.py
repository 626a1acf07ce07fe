"""GenView's pair weights on constructed patch tokens, against the formula written out."""

import math

import torch

from gensis.losses.genview_weights import foreground_mask, genview_weights


def image(foreground, background, n_foreground=4, n_patches=16, noise=0.01, seed=0):
    """Patch tokens: ``n_foreground`` tokens near ``foreground``, the rest near ``background``."""
    g = torch.Generator().manual_seed(seed)
    tokens = background.repeat(n_patches, 1).clone()
    tokens[:n_foreground] = foreground
    return tokens + noise * torch.randn(tokens.shape, generator=g)


def test_the_minority_cluster_of_tokens_is_the_foreground():
    e = torch.eye(8)
    tokens = torch.stack([image(10 * e[0], e[2]), image(-3 * e[1], 5 * e[3], n_foreground=6, seed=1)])
    masks = foreground_mask(tokens)
    assert masks[0].tolist() == [True] * 4 + [False] * 12 and masks[1].tolist() == [True] * 6 + [False] * 10


def test_a_pair_that_agrees_on_its_foreground_weighs_more():
    e = torch.eye(8)
    # pair 0: one foreground, different backgrounds (s_fg = 1, s_bg = 0); pair 1: the reverse (0 and 1)
    a = torch.stack([image(10 * e[0], e[2]), image(10 * e[0], e[2], seed=2)])
    b = torch.stack([image(10 * e[0], e[3], seed=1), image(10 * e[1], e[2], seed=3)])
    weights = genview_weights(a, b, gamma=1.0)
    expected = [2 * math.exp(d) / (math.exp(1) + math.exp(-1)) for d in (1, -1)]   # N softmax(gamma (s_fg - s_bg))
    torch.testing.assert_close(weights, torch.tensor(expected), rtol=1e-3, atol=1e-3)
    assert math.isclose(weights.sum().item(), 2.0, rel_tol=1e-6)
    torch.testing.assert_close(genview_weights(a, b, gamma=0.0), torch.ones(2))   # gamma 0: plain average
