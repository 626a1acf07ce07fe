"""The few-shot prototype probe on constructed features: a known answer and one that can say no."""

import numpy as np

from gensis.evaluation.few_shot import few_shot_balanced_accuracy


def test_separable_classes_score_one_and_label_noise_scores_chance():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 10
    train_y, test_y = np.repeat(np.arange(3), 30), np.repeat(np.arange(3), 20)
    train = centres[train_y] + rng.normal(size=(90, 3))
    test = centres[test_y] + rng.normal(size=(60, 3))
    good = few_shot_balanced_accuracy(train, train_y, test, test_y, shots=(1, 5), draws=20)
    assert set(good) == {"1", "5"} and good["5"]["mean"] == 1.0 and good["5"]["draws"] == 20
    shuffled = few_shot_balanced_accuracy(train, rng.permutation(train_y), test, test_y, shots=(5,), draws=50)
    assert abs(shuffled["5"]["mean"] - 1 / 3) < 0.12                 # labels unrelated to features: chance


def test_a_shot_count_larger_than_a_class_is_left_out():
    x, y = np.random.default_rng(1).normal(size=(12, 4)), np.array([0] * 10 + [1] * 2)
    assert set(few_shot_balanced_accuracy(x, y, x, y, shots=(1, 5), draws=3)) == {"1"}
