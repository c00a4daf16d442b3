"""The workflow as a whole: the README's main command on the default config, lint, format (Snakemake and Python)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import CI_CONFIG, REPO, TINY_CLASSES, snakemake_cmd

from temvirus.experiments import experiment_folder, experiment_name

pytestmark = pytest.mark.slow


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_run_is_complete_and_up_to_date(default_run: Path):
    """After one run nothing is left to do: every target exists and is newer than its inputs."""
    proc = subprocess.run(snakemake_cmd(default_run, "-n"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_default_run_regenerates_the_papers_tables(default_run: Path):
    results = default_run / "results"
    table1 = pd.read_csv(results / "tables" / "table1.csv")
    assert len(table1) > 0 and (results / "tables" / "table1.md").stat().st_size > 0
    table2 = pd.read_csv(results / "tables" / "table2.csv")
    # one row per configured experiment, and the 2 baselines of each split method used
    experiments = default_config()["experiments"]
    assert (table2["kind"] == "model").sum() == len(experiments)
    assert (table2["kind"] == "baseline").sum() == 2 * len({e["method"] for e in experiments})
    assert table2[["accuracy", "precision_macro", "recall_macro", "f1_macro"]].notna().all().all()
    assert table2["accuracy"].between(0, 1).all()
    for figure in ("fig1_patch_examples.png", "split_summary.png", "synthetic_vs_real.png"):
        assert (results / "figures" / figure).stat().st_size > 10_000, figure


def test_every_job_wrote_a_log(default_run: Path):
    logs = sorted((default_run / "logs").rglob("*.log"))
    assert logs, "no logs"
    assert all(log.stat().st_size > 0 for log in logs), [str(p) for p in logs if p.stat().st_size == 0]


def test_lint_is_clean_and_snakefiles_are_formatted():
    bin_dir = Path(sys.executable).parent
    lint = subprocess.run([str(bin_dir / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout[-3000:]
    smk = ["Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "workflow" / "rules").glob("*.smk"))]
    fmt = subprocess.run(
        [str(bin_dir / "snakefmt"), "--check", *smk], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert fmt.returncode == 0, fmt.stderr[-3000:]


def test_python_is_formatted_and_lint_clean():
    """ruff (pinned in the test extra, configured in pyproject.toml) on every Python file of the repo."""
    ruff = str(Path(sys.executable).parent / "ruff")
    fmt = subprocess.run([ruff, "format", "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert fmt.returncode == 0, fmt.stdout[-3000:] + fmt.stderr[-3000:]
    check = subprocess.run([ruff, "check", "--no-fix", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]


def test_best_model_beats_the_majority_class_and_three_times_chance(default_run: Path):
    """On all test patches of the classification classes, the best model is far from a broken chain.

    A floor, not the target: the default's >= 0.90 accuracy is measured by
    benchmarks/end_to_end.py.
    """
    classes = default_config()["classes"]["classification"]
    table2 = pd.read_csv(default_run / "results" / "tables" / "table2.csv")
    for method in table2["method"].unique():
        patches = pd.read_csv(default_run / "results" / "patches" / method / "patches.csv")
        test = patches[(patches["subset"] == "test") & patches["class"].isin(classes)]
        assert (table2.loc[table2["method"] == method, "n_test"] == len(test)).all()  # no cap: every test patch
    best = table2.loc[table2["accuracy"].idxmax()]
    folder = {experiment_name(e): experiment_folder(e) for e in default_config()["experiments"]}[best["experiment"]]
    predictions = pd.read_csv(default_run / "results" / "evaluation" / folder / "predictions.csv")
    majority = predictions["true"].value_counts().max() / len(predictions)
    accuracy = float(np.mean(predictions["true"] == predictions["predicted"]))
    assert accuracy == pytest.approx(best["accuracy"], abs=5e-4)
    assert accuracy > majority and accuracy > 3 / len(classes), (best["experiment"], accuracy, majority)


def _assert_training_and_evaluation_ran_on(workdir: Path, threads: int, experiments: int) -> None:
    """The lineage records of ``workdir``'s train_model and evaluate_model jobs say ``threads`` (Snakemake's
    threads of the job), and every training log says torch ran on that many CPU threads."""
    for rule in ("train_model", "evaluate_model"):
        records = sorted((workdir / "results" / "provenance" / rule).glob("*.json"))
        assert records and all(json.loads(r.read_text())["threads"] == threads for r in records), rule
    logs = sorted((workdir / "logs" / "training").glob("*/*/*/train.log"))  # {model}/{init}/{method}
    assert len(logs) == experiments, logs
    for log in logs:
        assert f", {threads} CPU threads" in log.read_text(), log


def test_training_and_evaluation_jobs_run_on_the_configured_threads(default_run: Path):
    """The suite's run (tests/ci.yaml, one thread a job as the default) and, with ``training.threads: 2``, the
    run of :func:`test_the_folders_own_split_alone_runs_through_table2`: a rule without ``threads:``
    (Snakemake's one thread a job) would fail there."""
    threads = yaml.safe_load(CI_CONFIG.read_text())["training"]["threads"]
    _assert_training_and_evaluation_ran_on(default_run, threads, len(default_config()["experiments"]))


def test_the_model_the_micrograph_stage_needs_trains_first(default_run: Path):
    """Of the train_model jobs ready at once, a micrographs.experiments entry's starts first (its
    priority, common.smk's train_priority): its micrograph jobs then run beside the other
    models' training. Without it Snakemake started the paper's custom CNN first (the default run
    took 497 s, not 458 s: docs/benchmarks.md section 3)."""
    config = yaml.safe_load(CI_CONFIG.read_text())
    micrographs = config["micrographs"].get("experiments", default_config()["micrographs"]["experiments"])
    analysed = {experiment_folder(e) for e in micrographs}
    assert 0 < len(analysed) < len(config["experiments"])  # the check needs one of each
    # the fixture's run is the first log (named by its start time); other tests' dry runs come after
    log = min((default_run / ".snakemake" / "log").glob("*.snakemake.log"))
    started = re.findall(
        r"^(?:local)?rule train_model:\n(?:    .*\n)*?    wildcards: model=(\w+), init=(\w+), method=(\w+)$",
        log.read_text(),
        re.M,
    )
    assert len(started) == len(config["experiments"]), started
    assert {"/".join(job) for job in started[: len(analysed)]} == analysed, started


def _run_with_overlay(tmp_path, overlay: dict, *args: str, ci: bool = True, timeout: int = 600):
    """The workflow in ``tmp_path/work`` with ``overlay`` (written to ``tmp_path/overlay.yaml``)
    on top of config/config.yaml; ``args`` (targets, flags) before the config files."""
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    cmd = snakemake_cmd(
        tmp_path / "work", *args, "--configfile", str(REPO / "config" / "config.yaml"), str(path), ci=ci
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_a_class_missing_from_the_data_fails_at_the_first_job_reading_it(tiny_synthetic, tmp_path):
    """classes.classification lists classes the data lack: raw_tables fails, naming them, before curation."""
    proc = _run_with_overlay(tmp_path, {"dataset": {"source": "local", "local": {"path": str(tiny_synthetic / "raw")}}})
    assert proc.returncode != 0
    log = (tmp_path / "work" / "logs" / "data" / "raw_tables.log").read_text()
    missing = [c for c in default_config()["classes"]["classification"] if c not in TINY_CLASSES]
    assert (
        f"classes.classification lists {missing}, which the data do not hold; classes found: {sorted(TINY_CLASSES)}"
        in log
    )
    assert "rule find_overlaps" not in proc.stdout + proc.stderr
    assert not (tmp_path / "work" / "results" / "raw" / "images.csv").exists()


def test_the_folders_own_split_alone_runs_through_table2(tiny_synthetic, tmp_path):
    """split.methods [given] (the published folders, nothing dealt): Table 1 and Fig 1 come from
    that split, no agreement table is asked for (nothing to compare), and Table 2 has its rows."""
    overlay = {
        "dataset": {"source": "local", "local": {"path": str(tiny_synthetic / "raw")}},
        "classes": {"classification": TINY_CLASSES},
        "split": {"methods": ["given"]},
        "augment": {"per_class": 8},
        "experiments": [{"model": "small_cnn", "init": "scratch", "method": "given", "epochs": 1}],
        "micrographs": {"experiments": []},
        "training": {"threads": 2},  # not the default's 1: the rules must take their threads from the config
    }
    proc = _run_with_overlay(tmp_path, overlay, ci=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    work = tmp_path / "work"
    _assert_training_and_evaluation_ran_on(work, 2, 1)
    assert "Table 1, regenerated (given split)" in (work / "results" / "tables" / "table1.md").read_text()
    assert not (work / "results" / "curation" / "split_agreement.csv").exists()
    table2 = pd.read_csv(work / "results" / "tables" / "table2.csv")
    assert set(table2.method) == {"given"} and "small_cnn-scratch-given" in set(table2.experiment)


def test_an_experiment_of_a_split_method_not_built_is_refused(tmp_path):
    """experiments[].method must be one of split.methods: refused before any job, naming both,
    whatever the target."""
    overlay = {"experiments": [{"model": "small_cnn", "init": "scratch", "method": "bad"}]}
    for target in ([], ["results/tables/table2.csv"]):
        proc = _run_with_overlay(tmp_path, overlay, "-n", *target, timeout=300)
        assert proc.returncode != 0, target
        assert (
            "experiments[0] (small_cnn/scratch/bad): method 'bad' is not among split.methods ['representative']"
            in proc.stdout + proc.stderr
        ), target
