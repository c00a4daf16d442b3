"""The workflow as a whole: the README's main command on the default config, lint, format (Snakemake and Python)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake_cmd

pytestmark = pytest.mark.slow


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
    experiments = yaml.safe_load((default_run / "config" / "config.yaml").read_text())["experiments"]
    assert (table2["kind"] == "model").sum() == len(experiments)
    assert (table2["kind"] == "baseline").sum() == 2 * len({e["split"] for e in experiments})
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
    fmt = subprocess.run([str(bin_dir / "snakefmt"), "--check", *smk], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert fmt.returncode == 0, fmt.stderr[-3000:]


def test_python_is_formatted_and_lint_clean():
    """ruff (pinned in the test extra, configured in pyproject.toml) on every Python file of the repo."""
    ruff = str(Path(sys.executable).parent / "ruff")
    fmt = subprocess.run([ruff, "format", "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert fmt.returncode == 0, fmt.stdout[-3000:] + fmt.stderr[-3000:]
    check = subprocess.run([ruff, "check", "--no-fix", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
