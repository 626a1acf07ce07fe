"""Linear probe: logistic regression on standardised frozen features (scikit-learn)."""

from __future__ import annotations

import numpy as np


def linear_probe_proba(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                       C: float = 1.0, max_iter: int = 2000, seed: int = 0) -> np.ndarray:
    """Class probabilities (N_test, n_classes) of a multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    model.fit(train_features, train_labels)
    proba = np.zeros((len(test_features), int(train_labels.max()) + 1))
    proba[:, model.classes_] = model.predict_proba(test_features)
    return proba
