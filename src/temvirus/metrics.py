"""Classification metrics from a confusion matrix, computed with scikit-learn.

Rows of a confusion matrix are true classes, columns predicted classes. Macro averages give
every class the same weight (the paper's Table 2): precision, recall and F1 are computed per
class (``sklearn.metrics.precision_recall_fscore_support``) and then averaged; a class never
predicted (or never present) has precision (recall) 0 (``zero_division=0``). Accuracy comes
with its 95% Wilson score interval (Wilson 1927).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: header of the first column of a confusion-matrix CSV (the paper's layout)
CONFUSION_CORNER = "true\\pred"


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(n_classes, n_classes)`` of class indices ``true`` (rows) vs ``predicted``."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape:
        raise ValueError(f"true {true.shape} and predicted {predicted.shape} differ in shape")
    if true.size and (min(true.min(), predicted.min()) < 0 or max(true.max(), predicted.max()) >= n_classes):
        raise ValueError(f"class indices outside 0..{n_classes - 1}")
    if not true.size:
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    return sk_confusion(true, predicted, labels=np.arange(n_classes)).astype(np.int64)


def _labels(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (true, predicted) label vectors that a count matrix summarises."""
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if (cm < 0).any() or not np.array_equal(cm, np.round(cm)):
        raise ValueError("confusion matrix must hold non-negative counts")
    cm = cm.astype(np.int64)
    n = len(cm)
    true = np.repeat(np.arange(n), cm.sum(axis=1))
    predicted = np.concatenate([np.repeat(np.arange(n), row) for row in cm]) if n else np.zeros(0, np.int64)
    return true, predicted


def per_class(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` and ``support`` (true count), by scikit-learn."""
    from sklearn.metrics import precision_recall_fscore_support

    true, predicted = _labels(confusion)
    n = len(confusion)
    if not true.size:
        zeros = np.zeros(n)
        return {"precision": zeros, "recall": zeros, "f1": zeros, "support": zeros.astype(np.int64)}
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=np.arange(n), zero_division=0
    )
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def per_class_frame(confusion: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Per-class metrics as a table: ``class, precision, recall, f1, support`` (one row per class)."""
    pc = per_class(confusion)
    return pd.DataFrame({"class": list(classes), **{k: pc[k] for k in ("precision", "recall", "f1", "support")}})


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the fraction of a true class given each label); empty rows stay 0."""
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n`` (e.g. accuracy).

    E. B. Wilson (1927), "Probable inference, the law of succession, and statistical
    inference", J. Am. Stat. Assoc. 22:209-212; computed by
    ``scipy.stats.binomtest(...).proportion_ci(method='wilson')``. Unlike the normal
    approximation it stays inside [0, 1] and is sensible for small ``n`` and proportions
    near 0 or 1. Raises ValueError for ``n < 1`` or ``successes`` outside ``0..n``.
    """
    from scipy.stats import binomtest

    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def summary(confusion: np.ndarray) -> dict[str, float]:
    """``accuracy`` and the macro ``precision_macro``, ``recall_macro``, ``f1_macro``."""
    from sklearn.metrics import accuracy_score

    pc = per_class(confusion)
    true, predicted = _labels(confusion)
    return {
        "accuracy": float(accuracy_score(true, predicted)) if true.size else 0.0,
        "precision_macro": float(pc["precision"].mean()),
        "recall_macro": float(pc["recall"].mean()),
        "f1_macro": float(pc["f1"].mean()),
    }


def accuracy_interval(confusion: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """:func:`wilson_interval` of the accuracy of a count matrix (correct = its trace)."""
    cm = np.asarray(confusion)
    return wilson_interval(int(np.trace(cm)), int(cm.sum()), confidence)


def read_confusion(path) -> pd.DataFrame:
    """A confusion-matrix CSV (first column ``true\\pred``) as a square count frame."""
    frame = pd.read_csv(path, index_col=0)
    if frame.index.name != CONFUSION_CORNER or list(frame.index) != list(frame.columns):
        raise ValueError(
            f"{path}: expected a square matrix with corner '{CONFUSION_CORNER}' and equal row/column classes"
        )
    return frame


def confusion_frame(confusion: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The matrix as a frame in the CSV layout of :func:`read_confusion` (corner column first)."""
    frame = pd.DataFrame(np.asarray(confusion, dtype=np.int64), index=classes, columns=classes)
    return frame.rename_axis(CONFUSION_CORNER).reset_index()
