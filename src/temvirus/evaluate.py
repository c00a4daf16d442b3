"""Evaluation of a trained experiment on its test patches.

:func:`evaluate_experiment`: per-patch predictions, confusion matrix (CSV in the paper's
layout, PNG in its style, counts and row-normalised) and metrics (accuracy with its 95%
Wilson interval, chance, macro precision/recall/F1; per class in ``per_class.csv``).
Table 2 is made by :mod:`temvirus.tables`, Figs 3-4 and the error tracing by :mod:`temvirus.figures`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from temvirus.figures import confusion_figure
from temvirus.io import save_figure, write_csv, write_json
from temvirus.metrics import (
    accuracy_interval,
    confusion_frame,
    confusion_matrix,
    per_class,
    per_class_frame,
    summary,
)
from temvirus.train import compact_tensor, load_checkpoint, load_subset, predict, resolve_device

log = logging.getLogger(__name__)


def evaluate_experiment(
    checkpoint: str | Path,
    patches_dir: str | Path,
    out_dir: str | Path,
    method: str,
    batch_size: int = 32,
    device: str = "auto",
    tta: bool = False,
    amp: str = "off",
    channels_last: bool = False,
    max_per_class: int | None = None,
    seed: int = 0,
    note: str = "",
    threads: int | None = None,
) -> dict:
    """Predict the test subset with a best.pt; write predictions.csv, confusion.csv/.png, per_class.csv, metrics.json.

    The rule ``evaluate_model``. ``checkpoint`` is a ``best.pt`` of :func:`temvirus.train.train_experiment`;
    ``patches_dir`` the patch folder (``patches.csv``, ``test.npy``; docs/architecture.md) of
    its split method ``method`` (recorded in metrics.json); the outputs go to ``out_dir``. ``batch_size`` patches per forward pass on ``device``
    (``auto``, ``cpu``, ``cuda``) with ``amp`` (``bf16``, ``fp16``, ``off``; CUDA only) and
    ``channels_last``; ``tta`` averages the class probabilities over the 8 flips/rotations.
    ``max_per_class`` keeps at most that many random test patches per class (small default
    runs), drawn with ``rng(seed, "subset", "test")``. ``note`` (a demo run's) goes under the
    figure's title. ``threads``: torch's CPU threads (``None``: leave as set). Raises
    ``ValueError`` (naming ``patches.csv``) when the split has no test patch of the model's classes.
    """
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    model, meta = load_checkpoint(checkpoint)
    classes = meta["classes"]
    x, y, table = load_subset(patches_dir, "test", classes, max_per_class, seed, meta["input_size"])
    if len(y) == 0:
        raise ValueError(f"{Path(patches_dir) / 'patches.csv'}: no test patches of the classes {classes}")
    dev = resolve_device(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    probs = predict(model.to(dev), compact_tensor(x), batch_size, dev, tta=tta, amp=amp, channels_last=channels_last)
    predictions, predicted = prediction_table(table, [classes[i] for i in y], probs, classes)
    out = Path(out_dir)
    write_csv(out / "predictions.csv", predictions.sort_values("patch_id", kind="stable"))
    cm = confusion_matrix(y, predicted, len(classes))
    frame = confusion_frame(cm, classes)
    write_csv(out / "confusion.csv", frame)
    title = f"{meta['experiment']} (test patches: {len(y)}{', D4 TTA' if tta else ''})"
    save_figure(out / "confusion.png", confusion_figure([(frame.set_index(frame.columns[0]), title)], note))
    write_csv(out / "per_class.csv", per_class_frame(cm, classes).round(6))
    pc = per_class(cm)
    low, high = accuracy_interval(cm)
    metrics = {
        "experiment": meta["experiment"],
        "model": meta["model"],
        "init": meta["init"],
        "method": method,
        "trainable_params": meta["trainable_params"],
        "best_epoch": meta["epoch"],
        "n_test": int(len(y)),
        "tta": bool(tta),
        **summary(cm),
        "chance": 1 / len(classes),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "per_class": {
            c: {k: float(pc[k][i]) if k != "support" else int(pc[k][i]) for k in pc} for i, c in enumerate(classes)
        },
    }
    write_json(out / "metrics.json", metrics)
    log.info(
        "%s: accuracy %.3f, macro F1 %.3f on %d test patches",
        meta["experiment"],
        metrics["accuracy"],
        metrics["f1_macro"],
        len(y),
    )
    return metrics


def prediction_table(table: pd.DataFrame, true: list[str], probs: np.ndarray, classes: list[str]):
    """predictions.csv's rows and the predicted class indices ``(n,)`` of ``n`` test patches
    (``table``'s ``patch_id`` and ``image_id``, their ``true`` classes, the ``(n, classes)``
    class probabilities ``probs``). The probabilities are written to 6 decimals, and the
    prediction is the class of the highest probability *as written* (a tie goes to the first
    class in order), so that the table reproduces its own ``predicted`` column, and the
    confusion matrix and accuracy with it: from unrounded values, a near-uniform model's two
    classes 2e-7 apart were written equal and the file named the other one (the CI run of
    2026-12-05, a 1-epoch custom model: RiftValley and Rotavirus both 0.081793)."""
    probs = np.asarray(probs).round(6)
    predicted = probs.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "patch_id": table["patch_id"],
            "image_id": table["image_id"],
            "true": true,
            "predicted": [classes[i] for i in predicted],
        }
    )
    for i, cls in enumerate(classes):
        frame[f"prob_{cls}"] = probs[:, i]
    return frame, predicted
