"""Does a generated view belong to its tile? Three readings in the encoder's embedding space.

- **Label fidelity** (labeled tiles): a kNN probe fitted on real training tiles' embeddings
  labels each generated view; the share that gets its source tile's label, beside the same
  share for the real held-out tiles themselves (the ceiling: a generator that returned its
  source) and for a random other held-out tile (the floor: a generator that ignored its
  condition).
- **Source retrieval** (any tiles): the share of views whose source is among their k
  nearest real tiles (cosine), of the tiles assessed.
- **Interpolation reach**: how far the cosine of an image drawn from slerp(e1, e2, alpha) to
  source 1 moves from alpha 0 to 1, as a fraction of 1 - cos(e1, e2): the slope of that
  cosine over alpha, pooled over pairs (every pair has the same alphas, so this is the mean
  of the pairs' least-squares slopes), divided by the mean of 1 - cos(e1, e2). 1: the drawn
  image travels the whole way from one source to the other; 0: it ignores alpha.
"""

from __future__ import annotations

import numpy as np

from gensis.evaluation.knn import knn_predict_proba


def label_fidelity(train: np.ndarray, train_labels: np.ndarray, sources: np.ndarray, source_labels: np.ndarray,
                   views: np.ndarray, n_classes: int, rng: np.random.Generator) -> dict:
    """``views``: (T, K, D) embeddings of K views of each of the T held-out ``sources`` (T, D).

    Returns ``{"views", "ceiling", "floor"}``: shares of views / real tiles / random other tiles that
    the probe gives the source tile's label.
    """
    t, k, d = views.shape
    predict = lambda x: knn_predict_proba(train, train_labels, x, n_classes).argmax(1)  # noqa: E731
    on_views = predict(views.reshape(t * k, d)).reshape(t, k)
    on_sources = predict(sources)
    others = (np.arange(t) + rng.integers(1, t, size=t)) % t       # a random other tile for each
    return {"views": float((on_views == source_labels[:, None]).mean()),
            "ceiling": float((on_sources == source_labels).mean()),
            "floor": float((on_sources[others] == source_labels).mean())}


def source_in_top_k(sources: np.ndarray, views: np.ndarray, k: int = 10) -> float:
    """Share of views (T, K, D) whose own source is among their ``k`` nearest of the T ``sources`` (cosine)."""
    t, n_views, d = views.shape
    sims = views.reshape(t * n_views, d) @ sources.T                 # unit vectors: cosine
    own = sims[np.arange(t * n_views), np.repeat(np.arange(t), n_views)]
    rank = (sims > own[:, None]).sum(1)                              # tiles strictly closer than the source
    return float((rank < k).mean())


def interpolation_reach(alphas: np.ndarray, cosine_to_first: np.ndarray, first: np.ndarray,
                        second: np.ndarray) -> float:
    """``cosine_to_first``: (P, A) cosine of each drawn image to source 1; ``first``, ``second``: (P, D) units."""
    a = alphas - alphas.mean()
    slopes = (cosine_to_first - cosine_to_first.mean(1, keepdims=True)) @ a / (a @ a)
    gap = float(np.mean(1 - (first * second).sum(1)))
    return float(slopes.mean() / gap) if gap > 1e-8 else 0.0
