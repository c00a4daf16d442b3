"""The figures of the workflow (PNG, byte-stable via :func:`temvirus.io.save_figure`).

Curation: Fig 1 (:func:`fig1_patch_examples`), the split summary, synthetic beside real
examples (:func:`plot_synthetic_vs_real`). Training: the curves (:func:`plot_curves`).
Evaluation: confusion matrices (:func:`confusion_figure`; Figs 3-4 beside the paper's,
:func:`paper_confusion_figure`) and the error tracing (:func:`error_tracing`, the paper's Fig 5
automated). The overlap decisions have their own figures in :mod:`temvirus.overlap_figures`.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from temvirus.classes import CLASSES, class_from_folder
from temvirus.io import save_figure, write_csv
from temvirus.metrics import read_confusion, row_normalised, summary
from temvirus.seeding import rng
from temvirus.tables import errors_per_image


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
    """Images and particles per class and subset, regenerated beside the paper's (Table 1).

    Two panels (images, particles); per class two stacked horizontal bars, ours (solid) and
    the paper's (hatched), each subset train / validation / test in its own colour.
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
        ax.set_title(f"{kind} per subset: ours (upper bar) vs paper (hatched)", fontsize=9)
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

    Images are drawn (seeded) from every subset folder of the class; each crop is centred on
    one annotated point (a centre line's middle vertex) and resampled bilinearly.
    """
    from scipy.ndimage import map_coordinates

    from temvirus.raw import (
        _Companions,
        _image_files,
        companion_folder,
        ignored,
        read_image,
        read_positions,
        read_tags,
        subset_folders,
    )

    files = [  # folders and companion files found as the raw reader finds them ('train/adenovirus/', 'TEST/')
        f
        for subset_dir in subset_folders(root).values()
        for class_dir in sorted(subset_dir.iterdir())
        if class_dir.is_dir() and not ignored(class_dir.name) and class_from_folder(class_dir.name) == cls
        for f in _image_files(class_dir)
    ]
    draw = rng(seed, "synth", "figure", cls)
    crops = []
    for index in draw.permutation(len(files))[:count]:
        path = files[index]
        positions = _Companions(companion_folder(path.parent, "particle_positions"), "particle positions file")
        shapes = read_positions(positions.find(f"{path.stem}_particlepositions.txt", path.stem))
        if not shapes:
            continue
        tags = _Companions(companion_folder(path.parent, "tags"), "tags file").find(f"{path.name}_tags.csv", path.stem)
        px = read_tags(tags, image=path.name).pixel_size_x_nm
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


# ------------------------------------------------------------------------------ evaluation

#: box drawn around correctly classified patches in the error-tracing figure
CORRECT_COLOUR = "#7CFC00"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def class_colours(classes: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per class, in class order: tab20 without its greens (green marks correct patches)."""
    cmap = _pyplot().get_cmap("tab20")
    palette = [cmap(i) for i in range(20) if i not in (4, 5)]
    return {c: palette[i % len(palette)] for i, c in enumerate(classes)}


def _draw_confusion(ax, counts: pd.DataFrame, title: str, normalised: bool = False) -> None:
    plt = _pyplot()
    values = row_normalised(counts.to_numpy()) if normalised else counts.to_numpy()
    top = 1.0 if normalised else max(1, values.max())
    ax.imshow(values, cmap=plt.get_cmap("Blues"), vmin=0, vmax=top)
    n = len(counts)
    for r in range(n):
        for c in range(n):
            if values[r, c]:
                dark = values[r, c] > 0.5 * top
                text = f"{values[r, c]:.2f}".lstrip("0") if normalised else str(values[r, c])
                ax.text(
                    c,
                    r,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6 if normalised else 7,
                    color="white" if dark else "black",
                )
    ax.set_xticks(range(n), counts.columns, rotation=90, fontsize=8)
    ax.set_yticks(range(n), counts.index, fontsize=8)
    ax.set(xlabel="Predicted label", ylabel="True label", title=title)


def confusion_figure(panels: Sequence[tuple[pd.DataFrame, str]], note: str = ""):
    """Confusion matrices (count frames, rows true) side by side in the paper's style.

    One column per panel; top row counts, bottom row each row divided by its sum (the
    fraction of a true class given each label; the diagonal is the recall). ``note`` (a demo
    run's, see :func:`temvirus.experiments.run_note`) is the figure's title.
    """
    plt = _pyplot()
    n = max(len(f) for f, _ in panels)
    side = 2.2 + 0.42 * n
    fig, axes = plt.subplots(
        2, len(panels), figsize=(side * len(panels), 2 * side + 0.4), dpi=100, squeeze=False, layout="constrained"
    )
    for col, (counts, title) in enumerate(panels):
        _draw_confusion(axes[0, col], counts, f"{title}: counts")
        _draw_confusion(axes[1, col], counts, f"{title}: row-normalised", normalised=True)
    if note:
        fig.suptitle(textwrap.fill(note, width=int(14 * side * len(panels))), fontsize=8, color="firebrick")
    return fig


def paper_confusion_figure(confusion_csv, paper_csv, out_png, title: str, note: str = "") -> None:
    """Fig 3 / Fig 4: this run's confusion matrix beside the paper's, as counts and row-normalised.

    ``confusion_csv`` and ``paper_csv`` are count matrices in the layout of
    ``resources/paper/fig3_confusion_custom.csv`` (first column ``true\\pred``); the figure
    goes to ``out_png`` with ``title`` on each panel and ``note`` (a demo run's) under it.
    """
    ours, paper = read_confusion(confusion_csv), read_confusion(paper_csv)
    acc = summary(ours.to_numpy())["accuracy"]
    panels = [
        (ours, f"{title}: this run (accuracy {acc:.3f})"),
        (paper, f"{title}: paper (accuracy {summary(paper.to_numpy())['accuracy']:.3f})"),
    ]
    save_figure(out_png, confusion_figure(panels, note))


def _draw_image(
    ax, pixels: np.ndarray, boxes: pd.DataFrame, pixel_size_nm: float, box_nm: float, colours: dict
) -> None:
    from matplotlib.patches import Rectangle

    low, high = np.percentile(pixels, [1, 99])
    ax.imshow(pixels, cmap="gray", vmin=low, vmax=max(high, low + 1))
    side = box_nm / pixel_size_nm
    for b in boxes.itertuples(index=False):
        x, y = b.x_nm / pixel_size_nm, b.y_nm / pixel_size_nm
        wrong = b.true != b.predicted
        ax.add_patch(
            Rectangle(
                (x - side / 2, y - side / 2),
                side,
                side,
                fill=False,
                edgecolor=colours[b.predicted] if wrong else CORRECT_COLOUR,
                linewidth=2.2 if wrong else 0.7,
                zorder=3 if wrong else 2,
            )
        )
    ax.set_xticks([])
    ax.set_yticks([])


def error_tracing(
    predictions_csv,
    patches_csv,
    images_csv,
    raw_root,
    out_csv,
    out_png,
    classes: Sequence[str],
    n_images: int,
    box_nm: float = 256,
) -> pd.DataFrame:
    """Write misclassified patches per test image (CSV) and draw the ``n_images`` worst images.

    Rule ``error_tracing``. ``predictions_csv``: :func:`evaluate_experiment`'s predictions;
    ``patches_csv``: the split's patch table (patch centres ``x_nm``, ``y_nm``); ``images_csv``
    and ``raw_root``: the raw image table and folder the images are read from; ``out_csv``:
    :func:`errors_per_image`; ``out_png``: the figure; ``classes``: the class order (colours).
    Raises ``ValueError`` naming the table when a predicted patch or its image is missing.
    Each test patch is outlined by its ``box_nm`` square (scaled to the raw pixel size): thin
    and light green where correct, thick in the colour of the predicted class where wrong.
    """
    from matplotlib.patches import Patch

    from temvirus.raw import read_image

    predictions = pd.read_csv(predictions_csv)
    per_image = errors_per_image(predictions)
    write_csv(out_csv, per_image)
    boxes = predictions.merge(
        pd.read_csv(patches_csv)[["patch_id", "x_nm", "y_nm"]], on="patch_id", how="left", validate="1:1"
    )
    if boxes["x_nm"].isna().any():
        raise ValueError(
            f"{patches_csv}: no rows for predicted patches {list(boxes.loc[boxes['x_nm'].isna(), 'patch_id'][:3])}"
        )
    images = pd.read_csv(images_csv).set_index("image_id")
    worst = per_image[per_image["n_misclassified"] > 0].head(n_images)
    colours = class_colours(classes)
    plt = _pyplot()
    cols = max(1, min(3, len(worst)))
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(5 * cols, 5.4 * rows + 0.8), dpi=100, squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, info in zip(axes.flat, worst.to_dict("records")):
        image_id = info["image_id"]
        if image_id not in images.index:
            raise ValueError(f"{images_csv}: test image {image_id} of {predictions_csv} is not in the image table")
        image = images.loc[image_id]
        ax.set_axis_on()
        _draw_image(
            ax,
            read_image(Path(raw_root) / image["path"]),
            boxes[boxes["image_id"] == image_id],
            float(image["pixel_size_nm"]),
            box_nm,
            colours,
        )
        ax.set_title(
            f"{image_id} ({info['class']})\n{info['n_misclassified']}/{info['n_patches']} misclassified: "
            f"{info['predicted_as']}",
            fontsize=8,
        )
    if worst.empty:
        axes[0, 0].text(0.5, 0.5, "no misclassified test patches", ha="center", va="center")
    drawn = boxes[boxes["image_id"].isin(worst["image_id"]) & (boxes["true"] != boxes["predicted"])]
    taken = sorted(set(drawn["predicted"]), key=list(classes).index)
    handles = [Patch(facecolor="none", edgecolor=colours[c], linewidth=2, label=f"predicted {c}") for c in taken]
    handles.append(Patch(facecolor="none", edgecolor=CORRECT_COLOUR, label="correct"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    save_figure(out_png, fig)
    return per_image


# -------------------------------------------------------------------------------- training


def plot_curves(history: pd.DataFrame, title: str, label_smoothing: float = 0.0):
    """Training curves: loss (left) and accuracy / macro-F1 (right) per epoch. With
    ``label_smoothing`` > 0 the training loss is taken against the smoothed targets (its least
    value is above 0), the validation loss against the classes: the legend says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    smoothed = f" (label smoothing {label_smoothing:g})" if label_smoothing else ""
    ax_loss.plot(history["epoch"], history["train_loss"], "o-", label=f"train{smoothed}")
    ax_loss.plot(history["epoch"], history["val_loss"], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(history["epoch"], history["train_acc"], "o-", label="train accuracy")
    ax_acc.plot(history["epoch"], history["val_acc"], "o-", label="validation accuracy")
    ax_acc.plot(history["epoch"], history["val_f1_macro"], "s--", label="validation macro-F1")
    ax_acc.set(xlabel="epoch", ylim=(0, 1.02), title="accuracy / F1")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _scale_bar_nm(width_nm: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k nm) near a fifth of the width."""
    target = width_nm / 5
    k = 10 ** np.floor(np.log10(target))
    return float(max(m * k for m in (1, 2, 5) if m * k <= target))


def micrograph_overlay(
    pixels: np.ndarray,
    pixel_size_nm: float,
    particles: pd.DataFrame,
    classes: Sequence[str],
    title: str,
    max_side: int = 1024,
    annotated: pd.DataFrame | None = None,
):
    """A micrograph (shown at most ``max_side`` px, every ``k``-th pixel) with its found particles:
    circles of the measured diameter in class colours, filament chains as lines along them,
    annotated centres (``x, y`` px) as small white crosses when given, and a scale bar. The figure
    is at most 7 x 7.6 inches at 100 dpi whatever the image's shape."""
    plt = _pyplot()
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Circle
    from scipy.sparse.csgraph import minimum_spanning_tree

    from temvirus.micrographs import count_units

    step = max(1, int(np.ceil(max(pixels.shape) / max_side)))
    shown = np.asarray(pixels[::step, ::step], dtype=np.float32)
    height_nm, width_nm = pixels.shape[0] * pixel_size_nm, pixels.shape[1] * pixel_size_nm
    # the field's longer side 7 inches, the shorter one at least 2 (and the title's line): a strip
    # 40000 px long is a 7-inch figure, not one of 300 times its width
    aspect = height_nm / width_nm
    width_in, height_in = (7.0, max(2.0, 7.0 * aspect)) if aspect <= 1 else (max(2.0, 7.0 / aspect), 7.0)
    fig, ax = plt.subplots(figsize=(width_in, height_in + 0.6), dpi=100)
    low, high = np.percentile(shown, [0.5, 99.5])
    ax.imshow(shown, cmap="gray", vmin=low, vmax=high, extent=(0, width_nm, height_nm, 0), interpolation="nearest")
    colours = class_colours(classes)
    if annotated is not None and len(annotated):
        ax.plot(annotated.x * pixel_size_nm, annotated.y * pixel_size_nm, "+", color="white", ms=5, mew=0.8, alpha=0.8)
    for x, y, cls, d in zip(particles.x_nm, particles.y_nm, particles["class"], particles.diameter_nm):
        d = d if np.isfinite(d) else 20.0
        ax.add_patch(Circle((x, y), d / 2, fill=False, color=colours.get(cls, "yellow"), lw=1.2))
    for _, chain in particles[particles.chain >= 0].groupby("chain"):
        # joined along the filament, a U or a ring too: the edges of the chain's minimum spanning tree
        xy = chain[["x_nm", "y_nm"]].to_numpy(float)
        tree = minimum_spanning_tree(np.linalg.norm(xy[:, None] - xy[None], axis=2)).tocoo()
        segments = [[xy[i], xy[j]] for i, j in zip(tree.row, tree.col)]
        ax.add_collection(LineCollection(segments, colors="white", linewidths=0.6, alpha=0.7))
    bar = _scale_bar_nm(width_nm)
    x0, y0 = 0.04 * width_nm, 0.95 * height_nm
    ax.plot([x0, x0 + bar], [y0, y0], "-", color="white", lw=3, solid_capstyle="butt")
    ax.text(x0 + bar / 2, y0 - 0.015 * height_nm, f"{bar:g} nm", color="white", ha="center", va="bottom", fontsize=9)
    present = [c for c in classes if (particles["class"] == c).any()]
    for c in present:  # particles as counted: a filament once, not each point along it
        count = count_units(particles.chain[particles["class"] == c])
        ax.plot([], [], "o", mfc="none", color=colours[c], label=f"{c} ({count})")
    if present:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, width_nm)
    ax.set_ylim(height_nm, 0)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def size_histograms(particles: pd.DataFrame, classes: Sequence[str], expected_nm: Mapping[str, float], note: str = ""):
    """Histograms of the measured diameters (nm) of the found particles, one panel per class
    found, with the class's typical diameter marked; a filament (``image_id``, ``chain`` >= 0) is
    one particle, its width the median of its points'."""
    plt = _pyplot()
    if len(particles) and (particles.chain >= 0).any():
        chains = particles[particles.chain >= 0].groupby(["image_id", "chain"], as_index=False)
        filaments = chains.agg({"class": "first", "diameter_nm": "median"})
        particles = pd.concat([particles[particles.chain < 0], filaments], ignore_index=True)
    present = [c for c in classes if (particles["class"] == c).any()] if len(particles) else []
    n = max(1, len(present))
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows + 0.5), squeeze=False)
    colours = class_colours(classes)
    for ax in axes.ravel()[len(present) :]:
        ax.set_axis_off()
    if not present:
        axes[0, 0].text(0.5, 0.5, "no particles found", ha="center", va="center")
    for ax, cls in zip(axes.ravel(), present):
        d = particles.loc[particles["class"] == cls, "diameter_nm"].dropna()
        ax.hist(d, bins=min(30, max(5, len(d) // 3)), color=colours[cls])
        if cls in expected_nm:
            ax.axvline(expected_nm[cls], color="black", ls="--", lw=1)
        ax.set_title(f"{cls}: n={len(d)}, median {np.median(d):.0f} nm" if len(d) else cls, fontsize=8)
        ax.set_xlabel("diameter (filaments: width), nm", fontsize=7)
        ax.tick_params(labelsize=7)
    title = "Sizes of the found particles (dashed: the class's typical diameter)"
    lines = textwrap.wrap(note, 30 * cols) if note else []
    fig.suptitle("\n".join([title, *lines]), fontsize=9 if not lines else 8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.04 * (1 + len(lines)) / rows))
    return fig
