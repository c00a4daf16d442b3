"""Planning the synthetic dataset: images per class and subset, particles per image, microscope.

Part of :mod:`temvirus.synth` (the counts rule is described there).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.stats import norm

from temvirus.classes import CLASSES, class_from_folder
from temvirus.seeding import rng
from temvirus.split import deal_representative

#: fewest images per class: the dealing gives train, test, train, validation
MIN_IMAGES_PER_CLASS = 4
#: the two cameras of the paper: image size (width, height), camera pixel pitch (nm), bit depth
MICROSCOPES = {
    "Tecnai 10 (MegaView III)": ((1376, 1032), 6450.0, 12),
    "LEO 912AB (Morada)": ((2048, 2048), 9000.0, 14),
}
TEM_SHARE_2048 = 0.3


def particle_counts(n_images: int, total: int, subset_targets: dict[str, float]) -> np.ndarray:
    """Non-decreasing per-image particle counts (>= 1) summing to ``total``.

    Images are in dealing order (:func:`temvirus.split.deal_representative`); the counts are
    the integers closest (L1) to a lognormal quantile curve whose subset sums equal
    ``subset_targets`` where possible (deviations are penalised 1000x more than shape).
    """
    n = n_images
    labels = np.array(deal_representative(n))
    q = np.exp(0.9 * norm.ppf((np.arange(n) + 0.5) / n))
    target = q / q.sum() * total
    nv = 2 * n + 6  # counts, |count - target|, subset slacks (+/-)
    cost = np.r_[np.zeros(n), np.full(n, 1.0 / total), np.full(6, 1000.0)]
    rows, lo, hi = [], [], []

    def add(coeffs: dict[int, float] | np.ndarray, low: float, high: float) -> None:
        row = np.zeros(nv)
        if isinstance(coeffs, dict):
            for k, v in coeffs.items():
                row[k] = v
        else:
            row[: len(coeffs)] = coeffs
        rows.append(row), lo.append(low), hi.append(high)

    for i in range(n - 1):
        add({i: -1, i + 1: 1}, 0, np.inf)
    for i in range(n):
        add({i: 1, n + i: -1}, -np.inf, target[i])
        add({i: 1, n + i: 1}, target[i], np.inf)
    for k, subset in enumerate(("train", "validation", "test")):
        row = np.zeros(nv)
        row[:n] = labels == subset
        row[2 * n + 2 * k], row[2 * n + 2 * k + 1] = 1, -1
        rows.append(row), lo.append(subset_targets[subset]), hi.append(subset_targets[subset])
    add(np.ones(n), total, total)
    result = milp(
        cost,
        constraints=LinearConstraint(np.array(rows), lo, hi),
        integrality=np.r_[np.ones(n), np.zeros(n + 6)],
        bounds=Bounds(np.r_[np.ones(n), np.zeros(n + 6)], np.inf),
    )
    if not result.success:  # cannot happen for total >= n; kept as a clear failure
        raise RuntimeError(f"no particle counts for {n} images and {total} particles: {result.message}")
    return np.round(result.x[:n]).astype(int)


def plan_dataset(table1: pd.DataFrame, scale: float, seed: int, classes=None) -> pd.DataFrame:
    """One row per Table-1 image: ``image_id, class, subset, n_particles, diameter_nm, microscope``.

    ``classes`` limits the plan to some classes (all 22 by default; a folder's spelling, ``Rift
    Valley``, names its class; an unknown name is a ValueError listing the classes); each class's
    rows are the same whichever others are planned.

    Image ids are ``{Class}_{rank:04d}`` in dealing order, so the representative split of the
    generated data (ascending count, ties by id) reproduces the ``subset`` column.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if classes is not None:  # a folder's spelling (Rift Valley, rotavirus) names its class too
        unknown = sorted(c for c in classes if class_from_folder(c) is None)
        if unknown:
            raise ValueError(f"unknown classes {unknown}; the classes: {', '.join(CLASSES)}")
        classes = [class_from_folder(c) for c in classes]
    rows = []
    for cls in [c for c in CLASSES if classes is None or c in classes]:
        t = table1.loc[cls]
        n = max(MIN_IMAGES_PER_CLASS, int(round(scale * t.images_total)))
        total = max(n, int(round(n * t.particles_total / t.images_total)))
        labels = deal_representative(n)
        per_subset = {
            "train": ("images_train", "particles_train"),
            "validation": ("images_val", "particles_val"),
            "test": ("images_test", "particles_test"),
        }
        want = {s: labels.count(s) * t[p] / t[i] for s, (i, p) in per_subset.items()}
        norm_ = total / sum(want.values())
        targets = {s: round(v * norm_) for s, v in want.items()}
        counts = particle_counts(n, total, targets)
        draw = rng(seed, "synth", "microscope", cls)
        for rank, (subset, count) in enumerate(zip(labels, counts)):
            scope = list(MICROSCOPES)[1] if draw.random() < TEM_SHARE_2048 else list(MICROSCOPES)[0]
            rows.append((f"{cls}_{rank:04d}", cls, subset, int(count), float(t.avg_particle_size_nm), scope))
    return pd.DataFrame(rows, columns=["image_id", "class", "subset", "n_particles", "diameter_nm", "microscope"])
