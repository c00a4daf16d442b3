"""Figures of the curation chain (PNG, byte-stable via :func:`temvirus.io.save_figure`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from temvirus.classes import CLASSES, FOLDER_NAMES
from temvirus.io import save_figure
from temvirus.seeding import rng


def fig1_patch_examples(
    patches_csv, arrays: Mapping[str, str | os.PathLike], out_png, classes: Sequence[str], per_class: int, seed: int
) -> None:
    """Like the paper's Fig 1: ``per_class`` example patches (any subset) of each class, one row per class.

    Examples are drawn with ``rng(seed, "fig1", class)`` and shown in patch-table order; each
    patch is contrast-stretched to its own 1st-99th percentile. A class with fewer patches
    shows all it has.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patches = pd.read_csv(patches_csv)
    stacks = {subset: np.load(path, mmap_mode="r") for subset, path in arrays.items()}
    size = (1.2 * per_class + 1.4, 1.2 * len(classes) + 0.3)
    fig, axes = plt.subplots(len(classes), per_class, figsize=size, dpi=100, squeeze=False, layout="constrained")
    for row, cls in enumerate(classes):
        members = patches[patches["class"] == cls]
        chosen = np.sort(rng(seed, "fig1", cls).choice(len(members), size=min(per_class, len(members)), replace=False))
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(chosen):
                example = members.iloc[chosen[col]]
                patch = np.asarray(stacks[example.subset][example["index"]], dtype=np.float64)
                low, high = np.percentile(patch, [1, 99])
                ax.imshow(patch, cmap="gray", vmin=low, vmax=max(high, low + 1), interpolation="nearest")
            else:
                ax.set_frame_on(False)
        axes[row, 0].set_ylabel(f"{cls}\n({len(members)})", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Example 256x256 nm patches per class (patch count)", fontsize=9)
    save_figure(out_png, fig)


def split_summary(table1_csv, out_png) -> None:
    """Images and particles per class and split, regenerated beside the paper's (Table 1).

    Two panels (images, particles); per class two stacked horizontal bars, ours (solid) and
    the paper's (hatched), each split train / validation / test in its own colour.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.read_csv(table1_csv)
    table = table[(table["class"] != "all") & (table["subset"] != "total")]
    classes = sorted(set(table["class"]), reverse=True)
    subsets = ["train", "validation", "test"]
    colours = {"train": "#4c72b0", "validation": "#dd8452", "test": "#55a868"}
    y = np.arange(len(classes))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(classes) + 1.6), dpi=100, sharey=True)
    for ax, kind in zip(axes, ["images", "particles"]):
        wide = {
            source: table.pivot(index="class", columns="subset", values=column).reindex(classes)
            for source, column in [("ours", kind), ("paper", f"paper_{kind}")]
        }
        for offset, source in [(0.2, "ours"), (-0.2, "paper")]:
            left = np.zeros(len(classes))
            for subset in subsets:
                values = wide[source][subset].to_numpy(dtype=float)
                ax.barh(
                    y + offset,
                    values,
                    height=0.38,
                    left=left,
                    color=colours[subset],
                    hatch="///" if source == "paper" else None,
                    edgecolor="white",
                    linewidth=0.3,
                    label=f"{subset} ({source})",
                )
                left += values
        ax.set_title(f"{kind} per split: ours (upper bar) vs paper (hatched)", fontsize=9)
        ax.set_xlabel(kind)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, classes, fontsize=8)
    axes[1].legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    save_figure(out_png, fig)


# ------------------------------------------------------------- synthetic beside real examples

#: field of view (nm) of each example, shown at 1 nm/px
EXAMPLE_FIELD_NM = 256


def example_crops(root: str | os.PathLike, cls: str, count: int, seed: int) -> list[np.ndarray]:
    """Up to ``count`` 256x256 crops (1 nm/px, float) around particles of class ``cls`` in a raw-layout folder.

    Images are drawn (seeded) from every split folder of the class; each crop is centred on
    one annotated point (a centre line's middle vertex) and resampled bilinearly.
    """
    from scipy.ndimage import map_coordinates

    from temvirus.raw import SPLITS, _image_files, read_image, read_positions, read_tags

    root = Path(root)
    files = [
        f
        for split in SPLITS
        if (root / split / FOLDER_NAMES[cls]).is_dir()
        for f in _image_files(root / split / FOLDER_NAMES[cls])
    ]
    draw = rng(seed, "synth", "figure", cls)
    crops = []
    for index in draw.permutation(len(files))[:count]:
        path = files[index]
        shapes = read_positions(path.parent / "particle_positions" / f"{path.stem}_particlepositions.txt")
        if not shapes:
            continue
        px = read_tags(path.parent / "tags" / f"{path.name}_tags.csv").pixel_size_x_nm
        line = shapes[int(draw.integers(len(shapes)))]
        x, y = line[len(line) // 2]
        offsets = (np.arange(EXAMPLE_FIELD_NM) - EXAMPLE_FIELD_NM / 2 + 0.5) / px  # pixel offsets of 1 nm steps
        rows, cols = np.meshgrid(y + offsets - 0.5, x + offsets - 0.5, indexing="ij")
        crops.append(map_coordinates(read_image(path).astype(np.float32), [rows, cols], order=1, mode="mirror"))
    return crops


def plot_synthetic_vs_real(synthetic_root, real_root, out_png, *, seed: int, per_class: int = 3) -> None:
    """Figure: per class, synthetic crops (left) beside real ones (right), all 256 nm fields at 1 nm/px."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real_root = Path(real_root) if real_root else None
    has_real = real_root is not None and real_root.is_dir()
    columns = per_class * (2 if has_real else 1)
    fig, axes = plt.subplots(
        len(CLASSES), columns, figsize=(1.25 * columns + 1.2, 1.25 * len(CLASSES) + 0.8), dpi=80, squeeze=False
    )
    for row, cls in zip(axes, CLASSES):
        tiles = example_crops(synthetic_root, cls, per_class, seed)
        tiles += [None] * (per_class - len(tiles))
        if has_real:
            real = example_crops(real_root, cls, per_class, seed)
            tiles += real + [None] * (per_class - len(real))
        for k, (ax, tile) in enumerate(zip(row, tiles)):
            ax.set_xticks([]), ax.set_yticks([])
            if tile is None:
                ax.set_facecolor("0.92")
                ax.text(
                    0.5, 0.5, "no\nexample", ha="center", va="center", fontsize=7, color="0.4", transform=ax.transAxes
                )
            else:
                lo, hi = np.percentile(tile, [1, 99])
                ax.imshow(tile, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), interpolation="nearest")
            if k == 0:
                ax.set_ylabel(cls, fontsize=8, rotation=0, ha="right", va="center")
    axes[0, 0].set_title("synthetic", fontsize=9, loc="left")
    if has_real:
        axes[0, per_class].set_title(f"real ({real_root.name})", fontsize=9, loc="left")
        title = "Synthetic (left) vs real (right) TEM examples: 256 nm fields at 1 nm/px"
    else:
        title = f"Synthetic TEM examples only (no real examples: {real_root} not found); 256 nm fields at 1 nm/px"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    save_figure(out_png, fig)
