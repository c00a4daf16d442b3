"""Baselines of Table 2 that need no GPU: what the data give without deep learning.

Per split method, on the same test patches as the experiments (the same ``max_per_class``
draw with the same seed):

- ``logistic_regression``: scikit-learn's multinomial logistic regression on the
  ``block`` x ``block`` px block means of each standardised patch (64 features for 256 px
  patches and 32 px blocks; features scaled to zero mean and unit variance on the training
  set), trained on the whole balanced training set (``train_augmented``, no cap);
- ``majority``: always the class with most training patches before balancing
  (``patches.csv`` subset ``train``; ties go to the first in ``classes``).

A model that does not beat both has learnt nothing the patches' coarse intensity layout or the
class frequencies do not already give.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from temvirus.io import write_json
from temvirus.metrics import accuracy_interval, confusion_matrix, summary

log = logging.getLogger(__name__)

#: rows of Table 2 per split: baseline name -> what it is
BASELINES = {
    "logistic_regression": "logistic regression on {block}x{block} px block means",
    "majority": "always the majority class ({cls})",
}
_CHUNK = 512


def block_means(patches: np.ndarray, block: int) -> np.ndarray:
    """``(N, S, S)`` patches -> ``(N, (S // block) ** 2)`` float64 block means of each standardised patch.

    Standardisation is the networks' (patch mean 0, standard deviation 1; see
    :func:`temvirus.train.standardise`). Raises ValueError when ``block`` does not divide ``S``.
    Works in chunks of 512 patches, so memory-mapped stacks need not fit in memory.
    """
    n, height, width = patches.shape
    if block < 1 or height % block or width % block:
        raise ValueError(f"block {block} px does not divide the {height}x{width} px patches")
    out = np.empty((n, (height // block) * (width // block)), dtype=np.float64)
    for start in range(0, n, _CHUNK):
        x = np.asarray(patches[start : start + _CHUNK], dtype=np.float64)
        x = (x - x.mean(axis=(1, 2), keepdims=True)) / np.maximum(x.std(axis=(1, 2), keepdims=True), 1e-6)
        blocks = x.reshape(len(x), height // block, block, width // block, block).mean(axis=(2, 4))
        out[start : start + len(x)] = blocks.reshape(len(x), -1)
    return out


def _result(name: str, description: str, true: np.ndarray, predicted: np.ndarray, n_classes: int, params: int) -> dict:
    cm = confusion_matrix(true, predicted, n_classes)
    low, high = accuracy_interval(cm)
    return {
        "name": name,
        "description": description,
        "trainable_params": params,
        **summary(cm),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
    }


def baseline_split(
    patches_dir: str | Path,
    classes: Sequence[str],
    out_json: str | Path,
    block: int = 32,
    max_test_per_class: int | None = None,
    seed: int = 0,
) -> dict:
    """Fit and score both baselines of one split folder; write and return ``metrics.json``.

    The record holds ``method`` (the split method: the folder's name), ``n_train``, ``n_test``, ``chance``
    (1 / number of classes) and ``baselines``: per baseline its ``name``, ``description``,
    ``trainable_params``, accuracy and macro metrics (:func:`temvirus.metrics.summary`) and
    the accuracy's 95% Wilson interval.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from temvirus.train import load_subset

    folder = Path(patches_dir)
    x_train, y_train, _ = load_subset(folder, "train_augmented", classes)
    x_test, y_test, _ = load_subset(folder, "test", classes, max_test_per_class, seed)
    if len(y_test) == 0:
        raise ValueError(f"{folder / 'patches.csv'}: no test patches of the classes {list(classes)}")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    model.fit(block_means(x_train, block), y_train)
    predicted = model.predict(block_means(x_test, block))
    linear = model[-1]
    params = int(linear.coef_.size + linear.intercept_.size)

    table = pd.read_csv(folder / "patches.csv")
    counts = table[table["subset"] == "train"]["class"].value_counts().reindex(list(classes), fill_value=0)
    majority = int(np.argmax(counts.to_numpy()))  # first of the largest, in class order
    results = [
        _result(
            "logistic_regression",
            BASELINES["logistic_regression"].format(block=block),
            y_test,
            predicted,
            len(classes),
            params,
        ),
        _result(
            "majority",
            BASELINES["majority"].format(cls=classes[majority]),
            y_test,
            np.full_like(y_test, majority),
            len(classes),
            0,
        ),
    ]
    record = {
        "method": folder.name,
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "chance": 1 / len(classes),
        "block_px": block,
        "baselines": results,
    }
    write_json(out_json, record)
    for r in results:
        log.info(
            "%s baseline %s: accuracy %.3f, macro F1 %.3f on %d test patches",
            folder.name,
            r["name"],
            r["accuracy"],
            r["f1_macro"],
            len(y_test),
        )
    return record
