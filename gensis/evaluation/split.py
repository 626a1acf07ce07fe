"""Train/test splits that keep near-duplicate groups on one side."""

from __future__ import annotations

from typing import Optional

import numpy as np

from gensis.errors import GensisError


def train_test_split(labels: np.ndarray, groups: Optional[np.ndarray], test_fraction: float = 0.3,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, test). With ``groups``, whole groups go to one side (stratified by the
    group's label where possible); without, a stratified split by sample."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    test = []
    if groups is not None:
        groups = np.asarray(groups)
        unique = np.unique(groups)
        group_label = {g: labels[groups == g][0] for g in unique}
        for label in np.unique(labels):
            members = np.array([g for g in unique if group_label[g] == label])
            rng.shuffle(members)
            n_test = max(1, int(round(len(members) * test_fraction))) if len(members) > 1 else 0
            test.extend(np.flatnonzero(np.isin(groups, members[:n_test])))
    else:
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            rng.shuffle(members)
            n_test = max(1, int(round(len(members) * test_fraction))) if len(members) > 1 else 0
            test.extend(members[:n_test])
    test = np.sort(np.array(test, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(labels)), test)
    if len(test) == 0 or len(train) == 0:
        raise GensisError("cannot split these tiles: every class needs at least two groups (or tiles) so that "
                          "both train and test get some; give data.train and data.test instead")
    return train, test
