"""Classification metrics from a confusion matrix (pure numpy).

Rows of a confusion matrix are true classes, columns predicted classes. Macro averages give
every class the same weight (the paper's Table 2): precision, recall and F1 are computed per
class and then averaged; a class never predicted (or never present) has precision (recall)
0, as in scikit-learn with ``zero_division=0``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: header of the first column of a confusion-matrix CSV (the paper's layout)
CONFUSION_CORNER = "true\\pred"


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(n_classes, n_classes)`` of class indices ``true`` (rows) vs ``predicted``."""
    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape:
        raise ValueError(f"true {true.shape} and predicted {predicted.shape} differ in shape")
    if true.size and (min(true.min(), predicted.min()) < 0 or max(true.max(), predicted.max()) >= n_classes):
        raise ValueError(f"class indices outside 0..{n_classes - 1}")
    return np.bincount(true * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)


def per_class(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` and ``support`` (true count)."""
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    tp = np.diag(cm)
    precision = _ratio(tp, cm.sum(axis=0))
    recall = _ratio(tp, cm.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": cm.sum(axis=1).astype(np.int64)}


def summary(confusion: np.ndarray) -> dict[str, float]:
    """``accuracy`` and the macro ``precision_macro``, ``recall_macro``, ``f1_macro``."""
    cm = np.asarray(confusion, dtype=np.float64)
    pc = per_class(cm)
    total = cm.sum()
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "precision_macro": float(pc["precision"].mean()),
        "recall_macro": float(pc["recall"].mean()),
        "f1_macro": float(pc["f1"].mean()),
    }


def read_confusion(path) -> pd.DataFrame:
    """A confusion-matrix CSV (first column ``true\\pred``) as a square count frame."""
    frame = pd.read_csv(path, index_col=0)
    if frame.index.name != CONFUSION_CORNER or list(frame.index) != list(frame.columns):
        raise ValueError(f"{path}: expected a square matrix with corner '{CONFUSION_CORNER}' and equal row/column classes")
    return frame


def confusion_frame(confusion: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The matrix as a frame in the CSV layout of :func:`read_confusion` (corner column first)."""
    frame = pd.DataFrame(np.asarray(confusion, dtype=np.int64), index=classes, columns=classes)
    return frame.rename_axis(CONFUSION_CORNER).reset_index()
