"""Figures of the curation chain (PNG, byte-stable via :func:`temvirus.io.save_figure`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

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
