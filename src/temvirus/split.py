"""Image-level splits into train / validation / test.

``representative`` (the paper's rule): per class, order the images by particle count and deal
them in the repeating sequence train, test, train, validation, train. Ties in particle count
are broken by image id, so the order (and the split) is a pure function of the table.
``bad`` (the paper's control): per class in the same order, the first 60 % to train, the next
20 % to validation, the last 20 % to test (:func:`bad_counts` gives the rounding).
``given``: the subset folders of the raw layout, as found.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import pandas as pd

from temvirus.io import write_csv

log = logging.getLogger(__name__)

#: the paper's dealing sequence, repeated until no image is left
REPRESENTATIVE_SEQUENCE = ("train", "test", "train", "validation", "train")


def representative_order(images: pd.DataFrame) -> pd.DataFrame:
    """Images of one class in dealing order: ascending ``n_particles``, then ``image_id``."""
    return images.sort_values(["n_particles", "image_id"], kind="stable")


def deal_representative(n: int) -> list[str]:
    """Subsets for ``n`` images already in :func:`representative_order`."""
    return [REPRESENTATIVE_SEQUENCE[i % len(REPRESENTATIVE_SEQUENCE)] for i in range(n)]


#: the split methods (config ``split.methods`` and an experiment's ``method``, the workflow's
#: ``{method}`` wildcard: ``split_{method}.csv``, ``results/patches/{method}/``): the one
#: definition in the package
METHODS = ("representative", "bad", "given")
#: the subsets a split method gives (the ``subset`` column of a split table and of a patch table,
#: the subset folders of the raw layout, ``folder_subset`` of the image table): the one definition
#: in the package
SUBSETS = ("train", "validation", "test")
SPLIT_COLUMNS = ["image_id", "class", "n_particles", "overlap_group", "folder_subset", "subset"]


class NoParticlesWarning(UserWarning):
    """Kept images without particles: they give no patches and are left out of every split."""


def bad_counts(n: int) -> tuple[int, int, int]:
    """Train, validation and test sizes of the ``bad`` split of ``n`` images.

    Validation and test each get ``floor(0.2 * n + 0.5)`` images (20 %, halves rounded up),
    train the rest; for n = 9 that is 5 / 2 / 2, the counts :func:`deal_representative` gives.
    """
    fifth = int(0.2 * n + 0.5)
    return n - 2 * fifth, fifth, fifth


def deal_bad(n: int) -> list[str]:
    """Subsets of the ``bad`` split for ``n`` images in :func:`representative_order`:
    the fewest-particle images to train, the next to validation, the most-particle ones to test."""
    n_train, n_val, n_test = bad_counts(n)
    return ["train"] * n_train + ["validation"] * n_val + ["test"] * n_test


def assign_split(images: pd.DataFrame, method: str) -> pd.DataFrame:
    """Split the kept images of ``images`` (``images_kept.csv``) with ``method``.

    ``representative`` and ``bad`` work per class on :func:`representative_order`; ``given`` is
    the folder subsets. Images that were not kept (overlap removal) or have no particles are left
    out (the latter with a :class:`NoParticlesWarning`). Returns :data:`SPLIT_COLUMNS`, sorted by
    class and image id.
    """
    if method not in METHODS:
        raise ValueError(f"unknown split method {method!r}; expected one of {list(METHODS)}")
    table = images[images["kept"].astype(bool)] if "kept" in images else images
    empty = table[table.n_particles == 0]
    if len(empty):
        warnings.warn(
            f"{len(empty)} kept images have no particles and are left out of the split: {sorted(empty.image_id)}",
            NoParticlesWarning,
            stacklevel=2,
        )
    table = table[table.n_particles > 0]
    parts = []
    for _, group in table.groupby("class", sort=True):
        ordered = representative_order(group).copy()
        if method == "representative":
            ordered["subset"] = deal_representative(len(ordered))
        elif method == "bad":
            ordered["subset"] = deal_bad(len(ordered))
        else:
            ordered["subset"] = ordered["folder_subset"]
        parts.append(ordered)
    result = pd.concat(parts) if parts else table.assign(subset=pd.Series(dtype=str))
    unknown = sorted(set(result["subset"]) - set(SUBSETS))
    if unknown:
        raise ValueError(f"subsets {unknown} are not in {list(SUBSETS)}")
    return result[SPLIT_COLUMNS].sort_values(["class", "image_id"], kind="stable").reset_index(drop=True)


#: what a class of ``classes.classification`` without patches in a subset would do, per subset
_NO_PATCHES_WOULD = {
    "train": "give it no training patch (nothing to balance or learn)",
    "validation": "average an empty class into the validation macro-F1 (early stopping, the best "
    "checkpoint) and leave it out of the micrograph thresholds",
    "test": "count it as 0 in Table 2's macro precision, recall and F1 (nothing to score)",
}


def _listed(ids: list[str], subset: str, most: int = 10) -> str:
    """``subset`` and its image ids, at most ``most`` of them (then how many in all)."""
    if not ids:
        return f"{subset} none"
    return f"{subset} {ids[:most]}" + (f" ... ({len(ids)} in all)" if len(ids) > most else "")


def check_class_subsets(
    patches: pd.DataFrame,
    classes: Sequence[str],
    source,
    method: str | None = None,
    subsets: Sequence[str] = SUBSETS,
    unit: str = "patches",
) -> None:
    """Refuse a class of ``classes`` (``classes.classification``) without patches in a subset.

    ``patches`` is a patch table (``patches.csv``: ``image_id``, ``class``, ``subset``) read from
    ``source``, or a split table (:data:`SPLIT_COLUMNS`, ``unit`` then "images"); ``method`` is its
    split method, named in the message when given. Every subset of ``subsets`` must hold patches of
    every class. Raises ValueError naming ``source``, the class, the subset, the split method, the
    class's images in every subset and what to do; called by :func:`write_split` (the first job that
    knows the subsets), :func:`temvirus.augment.augment` (before any training) and
    :func:`temvirus.train.load_subset` (training, evaluation, baselines).
    """
    problems = []
    for cls in classes:
        of_class = patches[patches["class"] == cls]
        empty = [s for s in subsets if not (of_class["subset"] == s).any()]
        if not empty:
            continue
        images = "; ".join(
            _listed(sorted(set(of_class.image_id[of_class.subset == s].astype(str))), s) for s in SUBSETS
        )
        split = f" of split method {method!r}" if method else ""
        problems += [
            f"class {cls!r} of classes.classification has no {s} {unit}{split} (its images: {images}); "
            f"it would {_NO_PATCHES_WOULD[s]}"
            for s in empty
        ]
    if problems:
        raise ValueError(
            f"{source}: "
            + "\n".join(problems)
            + "\nevery class needs particle images in train, validation and test: add images of it, choose another "
            "split method (split.methods), or leave it out of classes.classification"
        )


def agreement(split: pd.DataFrame) -> pd.DataFrame:
    """How far a split table agrees with the given folder split, per class and overall (``all``).

    Columns: ``class``, ``images``, ``same_subset`` (images whose ``subset`` equals their
    ``folder_subset``), ``agreement`` (their fraction), and per subset ``{subset}_both``, the
    images that both put there.
    """
    same = split["subset"] == split["folder_subset"]
    rows = []
    for cls, index in [*split.groupby("class", sort=True).groups.items(), ("all", split.index)]:
        row = {"class": cls, "images": len(index), "same_subset": int(same[index].sum())}
        row["agreement"] = round(row["same_subset"] / len(index), 4) if len(index) else float("nan")
        for subset in SUBSETS:
            row[f"{subset}_both"] = int((same[index] & (split.loc[index, "subset"] == subset)).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def read_table(path) -> pd.DataFrame:
    """Read an image, kept-image or split table, keeping ids as strings (``"0042"``)."""
    return pd.read_csv(path, dtype={"image_id": str, "overlap_group": str})


def write_split(kept_csv, out_csv, method: str, classes: Sequence[str] = ()) -> None:
    """Rule ``split``: ``images_kept.csv`` -> ``split_{method}.csv``; a class of ``classes``
    (``classes.classification``) that ``method`` leaves without images (with particles) in a subset
    is refused here (:func:`check_class_subsets`), before the rescaling and patches."""
    split = assign_split(read_table(kept_csv), method)
    check_class_subsets(split, classes, kept_csv, method, unit="images with particles")
    counts = split.groupby("subset").size().reindex(SUBSETS, fill_value=0)
    log.info("%s split: %s", method, ", ".join(f"{k} {v}" for k, v in counts.items()))
    write_csv(out_csv, split)


def write_agreement(split_csvs: dict[str, str], out_csv) -> None:
    """Rule ``split_agreement``: agreement of each split (method -> ``split_{method}.csv``) with
    the given folder split, one block of rows per method."""
    frames = []
    for method, path in sorted(split_csvs.items()):
        table = agreement(read_table(path))
        overall = table.set_index("class").loc["all"]
        log.info(
            "%s vs given split: %d of %d images agree (%.3f)",
            method,
            overall.same_subset,
            overall.images,
            overall.agreement,
        )
        frames.append(table.assign(method=method))
    result = pd.concat(frames, ignore_index=True)
    write_csv(out_csv, result[["method", *result.columns[:-1]]])
