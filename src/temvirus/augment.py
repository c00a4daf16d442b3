"""Training-set balancing by flips and 90-degree rotations (the dihedral group D4).

Every classification class gets exactly ``per_class`` training patches (METHOD.md: 736):

- a class with more patches is randomly reduced (the kept originals, ``identity``, in patch
  table order);
- a class with fewer keeps all its originals first (``identity``), then adds transformed
  copies in rounds: in each round the sources are visited in a random order and each gets one
  of its not-yet-used transforms (chosen at random), so sources are used evenly and no
  ``(source, transform)`` pair repeats before all 8 of every source are used; after that the
  rounds start over with all 8 transforms and the ``aug_id`` gets a ``_c{cycle}`` suffix.

Randomness comes from ``temvirus.seeding.rng(seed, "augment", class)`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from temvirus.io import atomic_path, write_csv
from temvirus.seeding import rng
from temvirus.split import check_class_subsets

log = logging.getLogger(__name__)

#: the 8 elements of D4, in a fixed order; ``identity`` first
TRANSFORMS = ("identity", "rot90", "rot180", "rot270", "flip_h", "flip_v", "transpose", "antitranspose")
AUGMENTED_COLUMNS = ["index", "aug_id", "source_patch_id", "class", "transform"]


def apply_transform(patch: np.ndarray, name: str) -> np.ndarray:
    """Apply the D4 element ``name`` to the last two axes (rows, columns) of ``patch``.

    ``rot90`` turns counter-clockwise (``numpy.rot90``); ``flip_h`` mirrors left-right,
    ``flip_v`` top-bottom; ``transpose`` swaps rows and columns, ``antitranspose`` mirrors
    about the other diagonal.
    """
    axes = (-2, -1)
    if name == "identity":
        return patch
    if name in ("rot90", "rot180", "rot270"):
        return np.rot90(patch, k=int(name[3:]) // 90, axes=axes)
    if name == "flip_h":
        return np.flip(patch, axis=-1)
    if name == "flip_v":
        return np.flip(patch, axis=-2)
    if name == "transpose":
        return np.swapaxes(patch, -2, -1)
    if name == "antitranspose":
        return np.rot90(np.swapaxes(patch, -2, -1), k=2, axes=axes)
    raise ValueError(f"unknown transform {name!r}; expected one of {TRANSFORMS}")


def _extra_pairs(n_sources: int, needed: int, generator: np.random.Generator) -> list[tuple[int, str, int]]:
    """``needed`` ``(source, transform, cycle)`` triples added to ``n_sources`` originals."""
    pairs: list[tuple[int, str, int]] = []
    cycle = 0
    while len(pairs) < needed:
        available = TRANSFORMS[1:] if cycle == 0 else TRANSFORMS
        order = [generator.permutation(len(available)) for _ in range(n_sources)]
        for step in range(len(available)):
            for source in generator.permutation(n_sources):
                pairs.append((int(source), available[order[source][step]], cycle))
        cycle += 1
    return pairs[:needed]


def plan(train: pd.DataFrame, classes: Sequence[str], per_class: int, seed: int) -> pd.DataFrame:
    """The augmented training table (:data:`AUGMENTED_COLUMNS`) from the train patch table.

    ``train`` holds the training rows of ``patches.csv`` in array order; ``index`` of the result
    numbers its rows, which come class by class in the order of ``classes``.
    """
    rows = []
    for cls in classes:
        ids = train.patch_id[train["class"] == cls].to_numpy()
        if len(ids) == 0:
            raise ValueError(
                f"class {cls!r} of classes.classification has no training patches; classes with "
                f"training patches: {sorted(set(train['class']))}"
            )
        generator = rng(seed, "augment", cls)
        if len(ids) >= per_class:
            keep = np.sort(generator.choice(len(ids), size=per_class, replace=False))
            rows += [(f"{ids[i]}_identity", ids[i], cls, "identity") for i in keep]
            continue
        rows += [(f"{pid}_identity", pid, cls, "identity") for pid in ids]
        for source, transform, cycle in _extra_pairs(len(ids), per_class - len(ids), generator):
            suffix = f"_c{cycle}" if cycle else ""
            rows.append((f"{ids[source]}_{transform}{suffix}", ids[source], cls, transform))
    table = pd.DataFrame(rows, columns=AUGMENTED_COLUMNS[1:])
    table.insert(0, "index", np.arange(len(table)))
    return table


def augment(
    patches_csv,
    train_npy,
    out_npy,
    out_csv,
    classes: Sequence[str],
    per_class: int,
    seed: int,
    method: str | None = None,
) -> pd.DataFrame:
    """Write ``train_augmented.npy`` and ``.csv`` (both or neither); returns the table. A class of
    ``classes`` without training, validation or test patches is refused before anything is
    written, before any training (:func:`check_class_subsets`, naming ``patches_csv`` and the
    split ``method``)."""
    patches = pd.read_csv(patches_csv, dtype={"image_id": str})
    check_class_subsets(patches, classes, patches_csv, method)
    train = patches[patches.subset == "train"].sort_values("index")
    table = plan(train, classes, per_class, seed)
    source = np.load(train_npy, mmap_mode="r")
    if source.shape[0] != len(train):
        raise ValueError(f"{train_npy}: {source.shape[0]} patches, {patches_csv} lists {len(train)} training patches")
    row_of = pd.Series(train["index"].to_numpy(), index=train.patch_id)
    with atomic_path(out_npy) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=source.dtype, shape=(len(table), *source.shape[1:]))
        for i, (pid, transform) in enumerate(zip(table.source_patch_id, table["transform"])):
            out[i] = apply_transform(source[row_of[pid]], transform)
        out.flush()
        del out
        write_csv(out_csv, table)
    counts = table.groupby("transform").size()
    log.info(
        "%s: %d patches, %d classes x %d; transforms %s", out_npy, len(table), len(classes), per_class, counts.to_dict()
    )
    return table
