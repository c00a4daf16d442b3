"""Evaluation of a trained experiment on its test patches, Table 2, Figs 3-4 and error tracing.

- :func:`evaluate_experiment`: per-patch predictions, confusion matrix (CSV in the paper's
  layout, PNG in its style, counts and row-normalised) and metrics (accuracy with its 95%
  Wilson interval, chance, macro precision/recall/F1; per class in ``per_class.csv``).
- :func:`table2`: one row per experiment with the paper's Table 2 row beside it, and per
  split the no-GPU baselines of :mod:`temvirus.baseline` on rows of their own.
- :func:`paper_confusion_figure`: Fig 3 / Fig 4, this run's matrix beside the paper's.

``note`` (from :func:`temvirus.experiments.run_note`) heads Table 2 and the figures' titles
when the run's method differs from the paper's.
- :func:`error_tracing`: the paper's Fig 5, automated: misclassified patches per test image,
  and the worst images drawn with each patch's box in the colour of its predicted class.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from temvirus.io import save_figure, write_csv, write_json, write_text
from temvirus.metrics import (
    accuracy_interval,
    confusion_frame,
    confusion_matrix,
    per_class,
    per_class_frame,
    read_confusion,
    row_normalised,
    summary,
)
from temvirus.models import PAPER_INIT_NAMES, PAPER_MODEL_NAMES
from temvirus.train import compact_tensor, load_checkpoint, load_subset, parse_experiment, predict, resolve_device

log = logging.getLogger(__name__)

METRICS = ["accuracy", "precision_macro", "recall_macro", "f1_macro"]
PAPER_COLUMNS = ["trainable_params"] + METRICS
TABLE2_COLUMNS = [
    "experiment",
    "kind",
    "model",
    "training",
    "split",
    "n_test",
    "chance",
    "trainable_params",
    *METRICS,
    "accuracy_ci_low",
    "accuracy_ci_high",
    *(f"paper_{c}" for c in PAPER_COLUMNS),
]
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


# ------------------------------------------------------------------------------ evaluation


def evaluate_experiment(
    checkpoint: str | Path,
    patches_dir: str | Path,
    out_dir: str | Path,
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
    ``patches_dir`` a split's patch folder (``patches.csv``, ``test.npy``; docs/architecture.md);
    the outputs go to ``out_dir``. ``batch_size`` patches per forward pass on ``device``
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
    predicted = probs.argmax(axis=1)
    out = Path(out_dir)
    predictions = pd.DataFrame(
        {
            "patch_id": table["patch_id"],
            "image_id": table["image_id"],
            "true": [classes[i] for i in y],
            "predicted": [classes[i] for i in predicted],
        }
    )
    for i, cls in enumerate(classes):
        predictions[f"prob_{cls}"] = probs[:, i].round(6)
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
        "split": parse_experiment(meta["experiment"])[2],
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


# --------------------------------------------------------------------------------- table 2


def _baseline_rows(path: str | Path) -> list[dict]:
    import json

    record = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        {
            "experiment": f"baseline-{record['split']}/{b['name']}",
            "kind": "baseline",
            "model": f"baseline: {b['description']}",
            "training": "-",
            "split": record["split"],
            "n_test": record["n_test"],
            "chance": record["chance"],
            **{c: b[c] for c in ["trainable_params", *METRICS, "accuracy_ci_low", "accuracy_ci_high"]},
        }
        for b in record["baselines"]
    ]


def table2(
    metrics_json: Sequence[str | Path], paper_csv: str | Path, baseline_json: Sequence[str | Path] = ()
) -> pd.DataFrame:
    """One row per experiment (``kind`` model) and per baseline of each split (``kind`` baseline).

    Columns :data:`TABLE2_COLUMNS`: our metrics, test patches, chance (1 / classes), the
    accuracy's 95% Wilson interval, trainable parameters and the paper's row beside them
    (empty for baselines and for rows the paper has not). Sorted by split, models (by model
    and training) before baselines (in :data:`temvirus.baseline.BASELINES` order).
    """
    import json

    paper = pd.read_csv(paper_csv).set_index(["model", "training", "split"])
    rows = []
    for path in metrics_json:
        m = json.loads(Path(path).read_text(encoding="utf-8"))
        key = (PAPER_MODEL_NAMES[m["model"]], PAPER_INIT_NAMES[m["init"]], m["split"])
        row = {"experiment": m["experiment"], "kind": "model", "model": key[0], "training": key[1], "split": key[2]}
        row.update({c: m[c] for c in ["n_test", "chance", *PAPER_COLUMNS, "accuracy_ci_low", "accuracy_ci_high"]})
        ref = paper.loc[key] if key in paper.index else None
        row.update({f"paper_{c}": (ref[c] if ref is not None else None) for c in PAPER_COLUMNS})
        rows.append(row)
    for path in baseline_json:
        rows += [{**r, **{f"paper_{c}": None for c in PAPER_COLUMNS}} for r in _baseline_rows(path)]
    frame = pd.DataFrame(rows, columns=TABLE2_COLUMNS)
    for c in [*METRICS, "chance", "accuracy_ci_low", "accuracy_ci_high"]:
        frame[c] = frame[c].astype(float).round(3)
    frame["paper_trainable_params"] = frame["paper_trainable_params"].astype("Int64")
    frame["_order"] = frame["kind"].map({"model": 0, "baseline": 1})
    frame["_name"] = frame["model"].where(frame["kind"] == "model", "")  # baselines keep their order
    frame = frame.sort_values(["split", "_order", "_name", "training"], kind="stable").drop(columns=["_order", "_name"])
    return frame.reset_index(drop=True)


def table2_markdown(frame: pd.DataFrame, note: str = "") -> str:
    """Table 2 as Markdown: each metric as ``ours (paper)``; baselines in italics on rows of their own.

    ``note`` (a demo run's, see :func:`temvirus.experiments.run_note`) is the first line.
    """
    lines = [
        "| model | training | split | test patches | chance | trainable params | accuracy [95% CI] "
        "| precision (macro) | recall (macro) | F1 (macro) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in frame.itertuples(index=False):

        def pair(c, fmt, r=r):
            ref = getattr(r, f"paper_{c}")
            return f"{fmt(getattr(r, c))} ({fmt(ref) if pd.notna(ref) else '-'})"

        accuracy = f"{r.accuracy:.3f} [{r.accuracy_ci_low:.3f}, {r.accuracy_ci_high:.3f}] ({r.paper_accuracy if pd.notna(r.paper_accuracy) else '-'})"
        cells = [str(r.n_test), f"{r.chance:.3f}", pair("trainable_params", lambda v: f"{int(v):,}"), accuracy]
        cells += [pair(c, lambda v: f"{v:.3f}") for c in METRICS[1:]]
        model = f"*{r.model}*" if r.kind == "baseline" else r.model
        lines.append(f"| {model} | {r.training} | {r.split} | " + " | ".join(cells) + " |")
    head = (f"**{note}**\n\n" if note else "") + (
        "Table 2: this run (paper) on the test patches; accuracy with its 95% Wilson interval; chance = 1 / classes. "
        "Rows in italics are baselines needing no GPU (temvirus.baseline), on the same test patches.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def write_table2(
    metrics_json: Sequence[str | Path],
    paper_csv,
    out_csv,
    out_md,
    baseline_json: Sequence[str | Path] = (),
    note: str = "",
) -> pd.DataFrame:
    """Rule ``table2``: :func:`table2` as CSV (``out_csv``) and :func:`table2_markdown` as Markdown (``out_md``).

    ``metrics_json``: the experiments' ``metrics.json`` files (:func:`evaluate_experiment`);
    ``paper_csv``: the paper's Table 2 (``resources/paper/table2_performance.csv``);
    ``baseline_json``: the baselines' ``metrics.json`` (:func:`temvirus.baseline.baseline_split`);
    ``note``: the demo-run line (:func:`temvirus.experiments.run_note`), first line of the Markdown.
    Returns the table.
    """
    frame = table2(metrics_json, paper_csv, baseline_json)
    write_csv(out_csv, frame)
    write_text(out_md, table2_markdown(frame, note))
    return frame


# --------------------------------------------------------------------------- error tracing


def errors_per_image(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per test image: patches, misclassified patches, their fraction and what they were taken for."""
    wrong = predictions["true"] != predictions["predicted"]
    rows = []
    for image_id, group in predictions.groupby("image_id", sort=True):
        bad = group[wrong.loc[group.index]]
        taken = bad["predicted"].value_counts().sort_index()
        rows.append(
            {
                "image_id": image_id,
                "class": group["true"].iloc[0],
                "n_patches": len(group),
                "n_misclassified": len(bad),
                "fraction_misclassified": round(len(bad) / len(group), 4),
                "predicted_as": ";".join(f"{c}:{n}" for c, n in taken.items()),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values(
        ["n_misclassified", "fraction_misclassified", "image_id"], ascending=[False, False, True], kind="stable"
    )


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
