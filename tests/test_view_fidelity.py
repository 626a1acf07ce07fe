"""Label fidelity, source retrieval and interpolation reach on constructed generators and embeddings."""

import numpy as np
import pytest

from gensis.evaluation.view_fidelity import interpolation_reach, label_fidelity, source_in_top_k


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def clustered():
    """Three well separated classes in 16-d: 90 training tiles and 60 held-out ones."""
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(3, 16))) * 4

    def draw(n):
        labels = np.arange(n) % 3
        return unit(centres[labels] + rng.normal(size=(n, 16))), labels

    (train, train_labels), (held, held_labels) = draw(90), draw(60)
    return train, train_labels, held, held_labels


def test_a_generator_that_returns_its_source_scores_the_ceiling(clustered):
    train, train_labels, held, held_labels = clustered
    views = np.repeat(held[:, None], 2, axis=1)                   # G(z, e) = the source tile itself
    scores = label_fidelity(train, train_labels, held, held_labels, views, 3, np.random.default_rng(1))
    assert scores["views"] == scores["ceiling"] > 0.9


def test_a_generator_that_ignores_its_condition_scores_the_floor(clustered):
    train, train_labels, held, held_labels = clustered
    rng = np.random.default_rng(2)
    views = np.stack([held[rng.permutation(len(held))] for _ in range(4)], axis=1)   # a random tile each time
    scores = label_fidelity(train, train_labels, held, held_labels, views, 3, np.random.default_rng(1))
    assert abs(scores["views"] - 1 / 3) < 0.1 and abs(scores["floor"] - 1 / 3) < 0.15
    assert scores["ceiling"] - scores["views"] > 0.5


def test_source_retrieval_counts_tiles_closer_than_the_source():
    sources = np.eye(20)                                          # 20 orthogonal tiles
    own = sources[:, None]
    assert source_in_top_k(sources, own, k=1) == 1.0
    # each view leans twice as much to the next tile as to its own: exactly one tile is closer
    views = unit(sources + 2 * np.roll(sources, -1, axis=0))[:, None]
    assert source_in_top_k(sources, views, k=1) == 0.0 and source_in_top_k(sources, views, k=2) == 1.0


def test_interpolation_reach_is_the_travelled_share_of_the_gap():
    alphas = np.linspace(0, 1, 6)
    first, second = np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [0.6, 0.8]])
    gap = 1 - (first * second).sum(1)                             # 1.0 and 0.4: mean 0.7
    whole = (1 - gap)[:, None] + gap[:, None] * alphas            # from cos(e1, e2) at alpha 0 to 1 at alpha 1
    assert interpolation_reach(alphas, whole, first, second) == pytest.approx(1.0)
    flat = np.full((2, 6), 0.5)
    assert interpolation_reach(alphas, flat, first, second) == pytest.approx(0.0)
    half = (1 - gap)[:, None] + 0.5 * gap[:, None] * alphas + 0.1
    assert interpolation_reach(alphas, half, first, second) == pytest.approx(0.5)
