"""Classification metrics reported by ``gensis eval``: accuracy, balanced accuracy, macro-F1, OvR AUC."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, proba: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

    n_classes = proba.shape[1]
    predicted = proba.argmax(axis=1)
    result = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", labels=list(range(n_classes)),
                                   zero_division=0)),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=list(range(n_classes))).tolist(),
    }
    present = np.unique(labels)
    if len(present) == n_classes and n_classes > 1:
        if n_classes == 2:
            result["auc"] = float(roc_auc_score(labels, proba[:, 1]))
        else:
            result["auc"] = float(roc_auc_score(labels, proba, multi_class="ovr"))
    else:
        result["auc"] = None
    return result
