"""Pieces of the Snakemake report (``snakemake --report``): HTML tables and the front page's summary.

The report shows CSV files only as download links, so the headline tables (Table 1, Table 2,
each experiment's per-class metrics) are also written as small self-contained HTML pages,
which the report displays. The front page (``workflow/report/workflow.rst``) includes
:func:`write_summary`'s fragment: which data and settings made the results, from which
commit, and the audit's verdict.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from temvirus.experiments import experiment_name
from temvirus.io import sha256_file, write_text

_STYLE = (
    "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
    "td,th{border:1px solid #999;padding:2px 8px;text-align:right;font-size:90%}"
    "th{background:#eee}td:first-child,th:first-child{text-align:left}"
)


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (inline style, no external resources)."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h2>{html.escape(title)}</h2>{body}</body></html>\n"
    )


def frame_html(frame: pd.DataFrame, title: str, note: str = "") -> str:
    """``frame`` as an HTML table page under the line ``note`` (when given); floats with 3
    decimals, missing values empty."""
    table = frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3f}", border=0, escape=True)
    return html_page(title, (f"<p><b>{html.escape(note)}</b></p>" if note else "") + table)


def read_table_csv(csv_path: str | Path) -> pd.DataFrame:
    """A results CSV with its columns of whole numbers as integers where empty cells made pandas
    read them as floats (a parameter count shown as ``14651401.000``); a column of written
    decimals (``1.0``) stays a float column, and any other column is as pandas reads it."""
    frame = pd.read_csv(csv_path)
    cells = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    for column in frame.select_dtypes("float").columns:
        given = cells[column][frame[column].notna()]
        if len(given) and given.str.fullmatch(r"-?(0|[1-9]\d{0,17})").all():  # within int64
            frame[column] = frame[column].astype("Int64")
    return frame


def write_csv_html(csv_path: str | Path, out_html: str | Path, title: str, note: str = "") -> None:
    """The CSV table ``csv_path`` as an HTML page (for the report), under the line ``note``."""
    write_text(out_html, frame_html(read_table_csv(csv_path), title, note))


def per_class_frame(metrics: Mapping) -> pd.DataFrame:
    """One row per class of an experiment's ``metrics.json`` (precision, recall, F1, support)."""
    rows = [{"class": cls, **values} for cls, values in metrics["per_class"].items()]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def write_per_class_html(metrics_json: str | Path, out_html: str | Path, note: str = "") -> None:
    """An experiment's per-class test metrics (from its ``metrics.json``) as an HTML page, under the line ``note``."""
    metrics = json.loads(Path(metrics_json).read_text())
    title = f"{metrics['experiment']}: per-class test metrics (accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['f1_macro']:.3f})"
    write_text(out_html, frame_html(per_class_frame(metrics), title, note))


def data_tables_line(images_csv: str | Path, particles_csv: str | Path) -> str:
    """The front page's fingerprint of the data: the raw tables' paths, sizes and sha256.

    ``images_csv`` (``results/raw/images.csv``) lists every raw image with its own sha256, and
    ``particles_csv`` every annotated point, so the two hashes identify the data a run read.
    """
    images = pd.read_csv(images_csv, usecols=["class"])
    n_points = len(pd.read_csv(particles_csv, usecols=["image_id"]))
    return (
        f"{images_csv} ({len(images)} images of {images['class'].nunique()} classes, "
        f"sha256 {sha256_file(images_csv)}), {particles_csv} ({n_points} annotated points, "
        f"sha256 {sha256_file(particles_csv)})"
    )


def summary_html(audit: Mapping, config: Mapping, configfiles: Sequence[str], note: str, data_tables: str) -> str:
    """The front page's fragment: data, config files, settings, commit, audit verdict (coloured), notice.

    ``configfiles``: the config sources in the order they apply (later over earlier);
    ``note`` is the demo-run line of :func:`temvirus.experiments.run_note` (``""`` for the paper's
    method); ``data_tables`` the raw tables' fingerprint (:func:`data_tables_line`).
    """
    esc = html.escape
    passed = bool(audit["passed"])
    colour = "#1b7a2f" if passed else "#b3261e"
    commits = sorted(
        {str(c.get("git_commit")) + (" (dirty)" if c.get("git_dirty") else "") for c in audit["lineage"]["code"] if c}
    )
    source = config["dataset"]["source"]
    data = {
        "synthetic": "synthetic data in the published raw layout (generated by the workflow)",
        "mendeley": "the published dataset, Mendeley Data doi:10.17632/x4dwwfwtw3.3",
        "local": f"a local copy of the raw data ({config['dataset']['local']['path']})",
    }[source]
    rows = [
        ("Data", data),
        ("Data tables", data_tables),
        ("Config (in the order applied, later over earlier)", ", ".join(configfiles) or "none"),
        ("Experiments", ", ".join(experiment_name(e) for e in config["experiments"]) or "none"),
        ("Git commit", ", ".join(commits) or "unknown"),
        ("Audit", f"{'PASSED' if passed else 'FAILED'} on {audit.get('date', 'unknown date')}"),
    ]
    table = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows
    )
    verdict = (
        f"<p id='audit-verdict' style='background:{colour};color:white;padding:6px 10px;font-weight:bold'>"
        f"Audit {'PASSED' if passed else 'FAILED'}: {esc(str(audit.get('date', '')))}</p>"
    )
    notice = ""
    if note:
        notice = (
            "<p id='demo-notice' style='background:#fff3cd;border:1px solid #c9a227;padding:6px 10px'>"
            f"<b>{esc(note)}</b></p>"
        )
    return f"<div id='run-summary'>{verdict}{notice}<table>{table}</table>{key_settings_html(config)}</div>\n"


def key_settings_html(config: Mapping) -> str:
    """The front page's "Key settings" list, from the run's settings (``report_summary``'s params:
    the config of the run that made the results, not the one ``snakemake --report`` was given)."""
    esc = html.escape
    dataset, training = config["dataset"], config["training"]
    source = f"<code>{esc(dataset['source'])}</code>"
    if dataset["source"] == "synthetic":
        synthetic = dataset["synthetic"]
        source += esc(f" (scale {synthetic['scale']} of Table 1, binning {synthetic['binning']})")
    classes = config["classes"]["classification"]
    epochs = training["epochs"]
    own = [  # an experiment's own settings over the training section's (e.g. the demo's 2-epoch custom)
        f"{experiment_name(e)}: " + ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("model", "init", "method"))
        for e in config["experiments"]
        if set(e) - {"model", "init", "method"}
    ]
    items = [
        f"data source: {source}",
        esc(f"classes: {len(classes)} ({', '.join(classes)})"),
        esc(f"split methods: {', '.join(config['split']['methods'])}"),
        esc(f"training patches per class after augmentation: {config['augment']['per_class']}"),
        esc(
            f"epochs: {epochs['scratch']} from scratch, {epochs['imagenet']} fine-tuning; "
            f"batch size {training['batch_size']}; device "
        )
        + f"<code>{esc(str(training['device']))}</code>",
        esc(f"experiments: {len(config['experiments'])}" + (f" (own settings: {'; '.join(own)})" if own else "")),
        esc(f"master seed: {config['seed']}"),
    ]
    return "<h3>Key settings</h3><ul id='key-settings'>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def write_summary(
    audit_json: str | Path,
    images_csv: str | Path,
    particles_csv: str | Path,
    config: Mapping,
    configfiles: Sequence[str],
    note: str,
    out_html: str | Path,
) -> None:
    """Write :func:`summary_html` for the audit's ``audit.json`` and the raw tables."""
    audit = json.loads(Path(audit_json).read_text())
    tables = data_tables_line(images_csv, particles_csv)
    write_text(out_html, summary_html(audit, config, configfiles, note, tables))
