"""Patches: 256x256 windows at 1 nm/px centred on the particle annotations.

Centres (METHOD.md): the point of a round particle, every vertex of a centre line, and the
midpoint of a centre line of exactly 2 points (an oval particle). Each patch is resampled
directly from the raw image with :func:`temvirus.rescale.window` (Lanczos-3, mirror padding
past the border), or cropped from the whole rescaled image where that costs less (many
particles below 1 nm/px, :func:`temvirus.rescale.windows`), rounded and clipped to the source
image's intensity range, stored as uint16 in one ``(N, 256, 256)`` array per subset beside a patch table (``docs/architecture.md``).

Images are processed one at a time and each raw image is read once; the subset arrays are
memory-mapped files written under temporary names and renamed when complete, so memory stays
at one image (and, below 1 nm/px, its smaller rescaled copy) plus one patch whatever the dataset size.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from temvirus.classes import FOLDER_NAMES
from temvirus.io import atomic_dir, atomic_path, write_csv
from temvirus.raw import RawDataError, read_image
from temvirus.rescale import quantize, rescale_image, windows
from temvirus.split import SUBSETS

log = logging.getLogger(__name__)

PATCH_SIZE = 256
PATCH_COLUMNS = ["patch_id", "image_id", "class", "subset", "index", "particle", "vertex", "x_nm", "y_nm"]
#: columns of ``results/curation/split_{method}.csv`` this module needs
SPLIT_COLUMNS = ["image_id", "class", "subset"]
#: vertex number of the single patch of a 2-point centre line
MIDPOINT = -1


def patch_id(image_id: str, particle: int, vertex: int) -> str:
    """``{image_id}_p{particle:03d}_v{vertex:02d}``, or ``..._vmid`` for a midpoint patch."""
    suffix = "vmid" if vertex == MIDPOINT else f"v{vertex:02d}"
    return f"{image_id}_p{particle:03d}_{suffix}"


def patch_points(particles: pd.DataFrame) -> pd.DataFrame:
    """Patch centres (pixels) from the particle table: ``image_id, particle, vertex, x, y``.

    One row per point of a 1-point particle or a centre line of >= 3 points; one row at the
    midpoint, with ``vertex == -1``, for a centre line of exactly 2 points.
    """
    points = particles[["image_id", "particle", "vertex", "x", "y"]]
    n_points = points.groupby(["image_id", "particle"])["vertex"].transform("size")
    pairs = points[n_points == 2].groupby(["image_id", "particle"], as_index=False)[["x", "y"]].mean()
    pairs.insert(2, "vertex", MIDPOINT)
    centres = pd.concat([points[n_points != 2], pairs], ignore_index=True)
    return centres.sort_values(["image_id", "particle", "vertex"], kind="stable", ignore_index=True)


def patch_table(split: pd.DataFrame, images: pd.DataFrame, particles: pd.DataFrame) -> pd.DataFrame:
    """The patch table (:data:`PATCH_COLUMNS`) of the images of a split table.

    Rows are ordered by subset (train, validation, test), image, particle and vertex; ``index``
    numbers the rows of each subset from 0. Images without particles give no patches.
    """
    centres = patch_points(particles[particles.image_id.isin(split.image_id)])
    table = centres.merge(split[list(SPLIT_COLUMNS)], on="image_id", validate="many_to_one")
    table = table.merge(images[["image_id", "pixel_size_nm"]], on="image_id", validate="many_to_one")
    table["x_nm"] = table.x * table.pixel_size_nm
    table["y_nm"] = table.y * table.pixel_size_nm
    table["subset"] = pd.Categorical(table.subset, categories=SUBSETS, ordered=True)
    table = table.sort_values(["subset", "image_id", "particle", "vertex"], kind="stable", ignore_index=True)
    table["subset"] = table.subset.astype(str)
    table["index"] = table.groupby("subset", sort=False).cumcount()
    table["patch_id"] = [patch_id(i, p, v) for i, p, v in zip(table.image_id, table.particle, table.vertex)]
    return table[PATCH_COLUMNS]


def _check_split(split: pd.DataFrame, images: pd.DataFrame, split_csv, images_csv) -> None:
    missing = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing:
        old = " ('split' is now 'subset': an older run's table, rerun rule split)" if "split" in split.columns else ""
        raise ValueError(f"{split_csv}: missing columns {missing}; expected {SPLIT_COLUMNS}{old}")
    bad = sorted(set(split.subset) - set(SUBSETS))
    if bad:
        raise ValueError(f"{split_csv}: unknown subsets {bad}; expected {list(SUBSETS)}")
    if split.image_id.duplicated().any():
        raise ValueError(f"{split_csv}: duplicate image ids {sorted(split.image_id[split.image_id.duplicated()])[:5]}")
    known = images.set_index("image_id")["class"]
    unknown = sorted(set(split.image_id) - set(known.index))
    if unknown:
        raise ValueError(f"{split_csv}: {len(unknown)} images not in {images_csv}, e.g. {unknown[:5]}")
    wrong = split[split["class"].to_numpy() != known.loc[split.image_id].to_numpy()]
    if len(wrong):
        raise ValueError(f"{split_csv}: class disagrees with {images_csv} for {list(wrong.image_id[:5])}")


def extract_image(
    pixels: np.ndarray, pixel_size_nm: float, centres_nm: np.ndarray, size: int = PATCH_SIZE
) -> np.ndarray:
    """``(n, size, size)`` uint16 patches of one raw image centred at ``centres_nm`` (x, y rows)."""
    low, high = int(pixels.min()), int(pixels.max())
    out = np.empty((len(centres_nm), size, size), dtype=np.uint16)
    for i, patch in enumerate(windows(pixels, pixel_size_nm, centres_nm, size)):
        out[i] = quantize(patch, low, high)
    return out


def _read_checked(root: Path, image: pd.Series) -> np.ndarray:
    path = root / image.path
    pixels = read_image(path)
    if pixels.shape != (image.height, image.width):
        raise RawDataError(
            path, f"image is {pixels.shape[1]}x{pixels.shape[0]} px, the image table says {image.width}x{image.height}"
        )
    return pixels  # uint8 or uint16: read_image converts or refuses any other type


def extract_patches(
    split_csv, images_csv, particles_csv, raw_root, patches_csv, arrays: Mapping[str, str | os.PathLike]
) -> pd.DataFrame:
    """Write the patch table and one uint16 ``(N, 256, 256)`` array per subset (``arrays[subset]``).

    All outputs appear together or not at all. Returns the patch table.
    """
    split = pd.read_csv(split_csv)
    images = pd.read_csv(images_csv)
    _check_split(split, images, split_csv, images_csv)
    table = patch_table(split, images, pd.read_csv(particles_csv))
    counts = table.subset.value_counts()
    image_rows = images.set_index("image_id")
    with contextlib.ExitStack() as stack:
        tmp = {s: stack.enter_context(atomic_path(arrays[s])) for s in SUBSETS}
        out = {
            s: np.lib.format.open_memmap(
                tmp[s], mode="w+", dtype=np.uint16, shape=(int(counts.get(s, 0)), PATCH_SIZE, PATCH_SIZE)
            )
            for s in SUBSETS
        }
        for n, (image_id, rows) in enumerate(table.groupby("image_id", sort=True)):
            image = image_rows.loc[image_id]
            pixels = _read_checked(Path(raw_root), image)
            patches = extract_image(pixels, image.pixel_size_nm, rows[["x_nm", "y_nm"]].to_numpy())
            for subset, index, patch in zip(rows.subset, rows["index"], patches):
                out[subset][index] = patch
            if n % 100 == 0:
                log.info("image %d: %s (%d patches)", n, image_id, len(rows))
        for array in out.values():
            array.flush()
        del out
        write_csv(patches_csv, table)
    log.info("%s: %d patches (%s)", patches_csv, len(table), ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SUBSETS))
    return table


def export_published(patches_csv, arrays: Mapping[str, str | os.PathLike], out_dir) -> None:
    """Write every patch as ``{subset}/{Class folder}/{patch_id}.tif`` (the published layout)."""
    import tifffile

    table = pd.read_csv(patches_csv)
    with atomic_dir(out_dir) as tmp:
        for subset, rows in table.groupby("subset", sort=True):
            stack = np.load(arrays[subset], mmap_mode="r")
            for cls, pid, index in zip(rows["class"], rows.patch_id, rows["index"]):
                folder = tmp / subset / FOLDER_NAMES[cls]
                folder.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(folder / f"{pid}.tif", np.asarray(stack[index]))


def write_rescaled_images(images_csv, raw_root, out_dir) -> None:
    """Write every raw image rescaled to 1 nm/px as ``{image_id}.tif`` (uint16, source range)."""
    import tifffile

    images = pd.read_csv(images_csv)
    with atomic_dir(out_dir) as tmp:
        for _, image in images.iterrows():
            pixels = _read_checked(Path(raw_root), image)
            rescaled = quantize(rescale_image(pixels, image.pixel_size_nm), int(pixels.min()), int(pixels.max()))
            tifffile.imwrite(tmp / f"{image.image_id}.tif", rescaled)
