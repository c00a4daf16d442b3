"""The tables of the workflow: Table 1, Table 2 and the errors per test image.

**Table 1** of the paper, regenerated (:func:`write_table1`): images, particles and patches per class and split.

One row per class and subset (``train``, ``validation``, ``test``, ``total``) for the classes
of the data, plus ``all`` rows summing them. Beside the regenerated numbers: the paper's
(``paper_images``, ``paper_particles``; the paper gives no patch counts per class), the
difference in images, and how the split relates to the given folder split (``given_images``:
kept images in that folder; ``agreement``: the fraction of the subset's images whose folder
is the same subset).

**Table 2** (:func:`write_table2`): one row per experiment with the paper's Table 2 row beside it,
and per split the no-GPU baselines of :mod:`temvirus.baseline` on rows of their own; ``note``
(from :func:`temvirus.experiments.run_note`) heads it when the run's method differs from the paper's.

**Errors per test image** (:func:`errors_per_image`), drawn by :func:`temvirus.figures.error_tracing`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from temvirus.classes import load_table1
from temvirus.io import write_csv, write_text
from temvirus.split import SUBSETS, read_table

log = logging.getLogger(__name__)

#: subset -> suffix of the paper's Table 1 columns
PAPER_SUFFIX = {"train": "train", "validation": "val", "test": "test", "total": "total"}
TABLE1_COLUMNS = [
    "class",
    "subset",
    "images",
    "particles",
    "patches",
    "paper_images",
    "paper_particles",
    "images_diff",
    "given_images",
    "agreement",
]


def table1(split: pd.DataFrame, patches: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Table 1 from a split table, a patch table and the paper's table (indexed by class)."""
    classes = sorted(set(split["class"]))
    unknown = sorted(set(classes) - set(paper.index))
    if unknown:
        raise ValueError(f"classes {unknown} are not in the paper's Table 1")
    rows = []
    for cls in [*classes, "all"]:
        images = split if cls == "all" else split[split["class"] == cls]
        members = patches if cls == "all" else patches[patches["class"] == cls]
        reference = paper.loc[classes].sum() if cls == "all" else paper.loc[cls]
        for subset in [*SUBSETS, "total"]:
            chosen = images if subset == "total" else images[images["subset"] == subset]
            folder = images if subset == "total" else images[images["folder_subset"] == subset]
            n_patches = len(members) if subset == "total" else int((members["subset"] == subset).sum())
            same = chosen["subset"] == chosen["folder_subset"]
            rows.append(
                {
                    "class": cls,
                    "subset": subset,
                    "images": len(chosen),
                    "particles": int(chosen["n_particles"].sum()),
                    "patches": n_patches,
                    "paper_images": int(reference[f"images_{PAPER_SUFFIX[subset]}"]),
                    "paper_particles": int(reference[f"particles_{PAPER_SUFFIX[subset]}"]),
                    "images_diff": len(chosen) - int(reference[f"images_{PAPER_SUFFIX[subset]}"]),
                    "given_images": len(folder),
                    "agreement": round(float(same.mean()), 4) if len(chosen) else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def table1_markdown(table: pd.DataFrame, split_name: str) -> str:
    """Table 1 as Markdown, one row per class: each cell ``ours (paper)``."""
    wide = table.set_index(["class", "subset"])
    order = [*SUBSETS, "total"]
    header = (
        ["class"]
        + [f"images {s}" for s in order]
        + [f"particles {s}" for s in order]
        + [f"patches {s}" for s in order]
        + ["agreement with given"]
    )
    lines = [
        f"Table 1, regenerated ({split_name} split): ours (paper). Patches are ours only; "
        "agreement is the fraction of images whose subset equals their folder subset.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for cls in dict.fromkeys(table["class"]):
        cells = [cls]
        for kind in ("images", "particles"):
            cells += [f"{wide.loc[(cls, s), kind]} ({wide.loc[(cls, s), f'paper_{kind}']})" for s in order]
        cells += [str(wide.loc[(cls, s), "patches"]) for s in order]
        cells.append(f"{wide.loc[(cls, 'total'), 'agreement']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table1(split_csv, patches_csv, paper_csv, out_csv, out_md, split_name: str = "representative") -> None:
    """Rule ``table1``: write Table 1 of the ``split_name`` split as CSV and Markdown."""
    table = table1(read_table(split_csv), pd.read_csv(patches_csv, dtype={"image_id": str}), load_table1(paper_csv))
    per_class = table[(table["subset"] != "total") & (table["class"] != "all")]
    mismatched = sorted(set(per_class.loc[per_class.images_diff != 0, "class"]))
    log.info(
        "Table 1: image counts equal the paper's for %d of %d classes%s",
        table["class"].nunique() - 1 - len(mismatched),
        table["class"].nunique() - 1,
        f" (differ: {mismatched})" if mismatched else "",
    )
    write_csv(out_csv, table)
    write_text(out_md, table1_markdown(table, split_name))


# --------------------------------------------------------------------------------- table 2

METRICS = ["accuracy", "precision_macro", "recall_macro", "f1_macro"]


PAPER_COLUMNS = ["trainable_params"] + METRICS


TABLE2_COLUMNS = [
    "experiment",
    "kind",
    "model",
    "training",
    "method",
    "n_test",
    "chance",
    "trainable_params",
    *METRICS,
    "accuracy_ci_low",
    "accuracy_ci_high",
    *(f"paper_{c}" for c in PAPER_COLUMNS),
]


def _read_record(path: str | Path) -> dict:
    """A ``metrics.json``; one written before its ``split`` key was named ``method`` is refused."""
    import json

    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if "method" not in record and "split" in record:
        raise ValueError(f"{path}: key 'split' is now 'method' (an older run's record): rerun the rule that wrote it")
    return record


def _baseline_rows(path: str | Path) -> list[dict]:
    record = _read_record(path)
    return [
        {
            "experiment": f"baseline-{record['method']}/{b['name']}",
            "kind": "baseline",
            "model": f"baseline: {b['description']}",
            "training": "-",
            "method": record["method"],
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
    (empty for baselines and for rows the paper has not). Sorted by split method, models (by model
    and training) before baselines (in :data:`temvirus.baseline.BASELINES` order).
    """
    from temvirus.models import PAPER_INIT_NAMES, PAPER_MODEL_NAMES  # torch: only where Table 2 is made

    paper = pd.read_csv(paper_csv).set_index(["model", "training", "method"])
    rows = []
    for path in metrics_json:
        m = _read_record(path)
        key = (PAPER_MODEL_NAMES[m["model"]], PAPER_INIT_NAMES[m["init"]], m["method"])
        row = {"experiment": m["experiment"], "kind": "model", "model": key[0], "training": key[1], "method": key[2]}
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
    frame = frame.sort_values(["method", "_order", "_name", "training"], kind="stable").drop(
        columns=["_order", "_name"]
    )
    return frame.reset_index(drop=True)


def table2_markdown(frame: pd.DataFrame, note: str = "") -> str:
    """Table 2 as Markdown: each metric as ``ours (paper)``; baselines in italics on rows of their own.

    ``note`` (a demo run's, see :func:`temvirus.experiments.run_note`) is the first line.
    """
    lines = [
        "| model | training | split method | test patches | chance | trainable params | accuracy [95% CI] "
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
        lines.append(f"| {model} | {r.training} | {r.method} | " + " | ".join(cells) + " |")
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
