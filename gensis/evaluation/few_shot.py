"""Few-shot probe: how well n labelled tiles per class describe a class (SimpleShot, Wang et al. 2019).

For each draw, n training tiles per class are picked at random; every test tile takes the
class whose mean L2-normalised training feature (prototype) is nearest in cosine; the draw's
balanced accuracy is recorded. Reported per n: mean and standard deviation over draws. A
few labels is the setting where an encoder's embedding has to carry the class by itself.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def few_shot_balanced_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                               shots: Sequence[int] = (1, 5, 10, 25), draws: int = 100, seed: int = 0) -> dict:
    """``{str(n): {"mean", "std", "draws"}}`` of the prototype classifier's balanced accuracy."""
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(seed)
    train = train_x / np.linalg.norm(train_x, axis=1, keepdims=True).clip(1e-12)
    test = test_x / np.linalg.norm(test_x, axis=1, keepdims=True).clip(1e-12)
    classes = np.unique(train_y)
    members = [np.flatnonzero(train_y == c) for c in classes]
    out = {}
    for n in shots:
        if any(len(m) < n for m in members):
            continue  # not enough labelled tiles of some class for this n
        scores = []
        for _ in range(draws):
            prototypes = np.stack([train[rng.choice(m, n, replace=False)].mean(0) for m in members])
            prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True).clip(1e-12)
            predicted = classes[(test @ prototypes.T).argmax(1)]
            scores.append(balanced_accuracy_score(test_y, predicted))
        out[str(n)] = {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "draws": draws}
    return out
