"""The Snakemake report of the default run, opened in a real headless browser (Debian's chromium).

`snakemake --report` of the default run must show, in the browser, the front page
(workflow/report/workflow.rst with the run's summary: data, commit, audit verdict, the
demo-run notice) and Table 2 as a table (not a download link). chromium is installed with
apt-get where missing (as root), else the browser tests are skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import CI_CONFIG, ensure_debian_packages, snakemake_cmd

from temvirus.io import sha256_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(default_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    done = subprocess.run(snakemake_cmd(default_run, "--report", str(out)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def chromium() -> str:
    ensure_debian_packages("chromium", ["chromium"], ["chromium"])
    return shutil.which("chromium")


def dump_dom(chromium: str, page: Path | str, tmp_path: Path) -> str:
    """The DOM of ``page`` after its scripts ran (chromium --headless --dump-dom)."""
    url = page if isinstance(page, str) else page.as_uri()
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=10000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def visible_text(dom: str) -> str:
    """The DOM's text without scripts, styles and tags, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL | re.IGNORECASE)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_summary_is_made_from_the_audit(default_run: Path):
    summary = (default_run / "results" / "report" / "summary.html").read_text()
    audit = json.loads((default_run / "results" / "audit" / "audit.json").read_text())
    assert audit["passed"] and "Audit PASSED" in summary and audit["date"] in summary
    commits = {c["git_commit"] for c in audit["lineage"]["code"] if c}
    assert commits and all(c in summary for c in commits)
    assert "id='demo-notice'" in summary  # the default run is a demo run
    for table in ("images.csv", "particles.csv"):  # the data's fingerprint
        assert f"sha256 {sha256_file(default_run / 'results' / 'raw' / table)}" in summary
    listed = re.search(r"Config \(in the order applied[^<]*</th><td>([^<]*)</td>", summary)
    assert listed and listed.group(1).split(", ") == ["config/config.yaml", str(CI_CONFIG)], summary


def test_front_page_is_shown_in_the_browser(report: Path, chromium: str, tmp_path: Path, default_run: Path):
    text = visible_text(dump_dom(chromium, report, tmp_path))
    assert "TEM virus benchmark, reproduced" in text, text[:3000]
    assert "Audit PASSED" in text and "demo run: synthetic data" in text, text[:3000]
    assert "synthetic data in the published raw layout" in text and "data source: synthetic" in text, text[:3000]
    audit = json.loads((default_run / "results" / "audit" / "audit.json").read_text())
    assert any(c["git_commit"] in text for c in audit["lineage"]["code"] if c), text[:3000]


def front_page(report: Path) -> str:
    """The report's front page (workflow/report/workflow.rst rendered) as text, tags removed."""
    desc = re.search(r"var workflow_desc = (\".*?\");\n", report.read_text(), re.DOTALL).group(1)
    return visible_text(json.loads(desc))


def test_front_page_shows_the_runs_settings_whatever_config_the_report_is_given(default_run: Path, tmp_path: Path):
    """The run used tests/ci.yaml on top of the default (scale 0.03, 16 patches per class, 10
    epochs, custom 1 epoch); `snakemake --report` given the default alone (`make report` after
    such a run) must still say so: the front page's settings come from the run's summary, not
    from the config of the report command (which said scale 0.15, 128 patches, 30 epochs,
    custom 2 epochs)."""
    out = tmp_path / "report.html"
    done = subprocess.run(
        snakemake_cmd(default_run, "--report", str(out), ci=False), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = front_page(out)
    assert "data source: synthetic (scale 0.03 of Table 1, binning 2)" in text, text[:3000]
    assert "training patches per class after augmentation: 16" in text, text[:3000]
    assert "epochs: 10 from scratch, 4 fine-tuning" in text, text[:3000]
    # an experiment's own settings: before, the custom model's 2 epochs showed nowhere on the page
    assert "own settings: custom-scratch-representative: epochs 1, patience 1" in text, text[:3000]
    assert "scale 0.15" not in text and "per class after augmentation: 128" not in text, text[:3000]


def test_table2_is_shown_as_a_table_in_the_browser(report: Path, chromium: str, tmp_path: Path, default_run: Path):
    """Table 2 opened in the report as its view button does it: an HTML table in the content frame."""
    html = report.read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.DOTALL).group(1))
    entry = results["results/report/table2.html"]
    assert entry["mime_type"] == "text/html"
    # the report, made to open Table 2 once it has rendered (what a click on its eye button does)
    opener = (
        "<script>window.addEventListener('load', () => setTimeout(() => app.setView({content: 'html', "
        "contentPath: results['results/report/table2.html'].data_uri, resultPath: 'results/report/table2.html'}), 500));</script>"
    )
    opened = tmp_path / "report_table2.html"
    head, body_end, tail = html.rpartition("</body>")
    opened.write_text(head + opener + body_end + tail)
    dom = dump_dom(chromium, opened, tmp_path)
    frame = re.search(r"<iframe[^>]*src=\"(data:text/html[^\"]*)\"", dom)
    assert frame, "no content frame showing Table 2"
    page = base64.b64decode(frame.group(1).split("base64,", 1)[1]).decode()
    table = visible_text(
        dump_dom(chromium, f"data:text/html;base64,{base64.b64encode(page.encode()).decode()}", tmp_path)
    )
    table2 = pd.read_csv(default_run / "results" / "tables" / "table2.csv")
    assert "Table 2" in table and "demo run: synthetic data" in table, table[:2000]  # before: no word of it
    for _, row in table2.iterrows():
        assert row["experiment"] in table and f"{row['accuracy']:.3f}" in table, (row.to_dict(), table[:2000])
    # whole numbers as written: the paper's parameter count (a column with empty cells) read 14651401.000
    assert "14651401" in table and "14651401.000" not in table and f" {table2.trainable_params[0]} " in table


def test_a_results_table_keeps_its_whole_number_columns_whole(tmp_path: Path):
    from temvirus.report import read_table_csv

    csv = tmp_path / "t.csv"
    csv.write_text("name,count,share,agreement,id,huge\na,14651401,0.5,1.0,007,123456789012345678901\nb,,0.25,0,010,\n")
    frame = read_table_csv(csv)
    assert str(frame["count"].dtype) == "Int64" and frame["count"].tolist()[0] == 14651401
    assert frame["share"].dtype == float and frame["agreement"].dtype == float  # "1.0" was written as a decimal
    assert (
        frame["id"].tolist() == [7, 10] and str(frame["huge"].dtype) != "Int64"
    )  # as pandas reads them; past int64: kept


def test_per_experiment_results_carry_labels(report: Path):
    results = json.loads(re.search(r"var results = (\{.*?\});\n", report.read_text(), re.DOTALL).group(1))
    per_class = {p: r for p, r in results.items() if p.startswith("results/report/per_class/")}
    assert len(per_class) == 2, sorted(results)
    for path, entry in per_class.items():
        model, init, method = Path(path).relative_to("results/report/per_class").with_suffix("").parts
        assert entry["labels"] == {"model": model, "init": init, "split method": method}, entry
    # every per-experiment item (before, evaluate_model's per_class.csv had none)
    items = [
        p
        for p in results
        if Path(p).parts[:2] in {("results", "models"), ("results", "evaluation")} and Path(p).parts[2] != "baseline"
    ]
    assert sum(p.endswith("/per_class.csv") for p in items) == 2, sorted(results)
    for path in items:
        parts = Path(path).parts
        assert results[path]["labels"] == {"model": parts[2], "init": parts[3], "split method": parts[4]}, path


def test_config_sources_are_listed_in_the_order_they_apply():
    """Snakemake lists the --configfile files before the Snakefile's own, which is applied
    under them: the front page listed `tests/ci.yaml, config/config.yaml`, the reverse of what
    overrides what. Now the Snakefile's file, the given ones in their order, then --config."""
    from temvirus.smk import applied_config_sources

    assert applied_config_sources(["b.yaml", "a.yaml", "config/config.yaml"], ["b.yaml", "a.yaml"], []) == [
        "config/config.yaml",
        "b.yaml",
        "a.yaml",
    ]
    assert applied_config_sources(["config/config.yaml"], [], ["seed=3", "augment={'per_class': 8}"]) == [
        "config/config.yaml",
        "--config seed=3 augment={'per_class': 8}",
    ]
