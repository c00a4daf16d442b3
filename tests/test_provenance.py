"""Lineage records written by temvirus.smk.run_rule (temvirus.provenance).

The job object is Snakemake's own script object (snakemake.iocontainers.Snakemake), built as
Snakemake builds it for a script; the jobs run in a temporary working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake, Wildcards

from temvirus import provenance
from temvirus.io import sha256_file, write_text
from temvirus.smk import run_rule


def job(rule, inputs=None, outputs=None, params=None, wildcards=None, config=None, log=None) -> Snakemake:
    """A Snakemake script object as the workflow hands it to a script."""
    return Snakemake(
        InputFiles(fromdict=inputs or {}),
        OutputFiles(fromdict=outputs or {}),
        Params(fromdict=params or {}),
        Wildcards(fromdict=wildcards or {}),
        1,
        ResourceList(),
        Log(log or []),
        config or {"seed": 42},
        rule,
        None,
    )


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_outputs(smk) -> None:
    write_text(smk.output.table, "a,b\n1,2\n")
    root = smk.output.root
    os.makedirs(f"{root}/sub")
    write_text(f"{root}/x.txt", "x")
    write_text(f"{root}/sub/y.txt", "yy")
    provenance.report_seed("torch", 123)
    provenance.note("epochs", 3)


def test_record_lists_outputs_inputs_params_seeds_and_code(workdir):
    write_text("resources/in.csv", "c\n3\n")
    os.makedirs("logs")  # Snakemake makes a job's log folder
    smk = job(
        "make",
        inputs={"src": "resources/in.csv"},
        outputs={"table": "results/t/rep.csv", "root": "results/t/dir"},
        params={"alpha": 0.5, "classes": ["A", "B"], "inner": {"seed": 9}},
        wildcards={"method": "rep"},
        config={"seed": 42, "dataset": {"synthetic": {"seed": 7}}},
        log=["logs/make.log"],
    )
    run_rule(smk, make_outputs)

    record = json.loads((workdir / "results/provenance/make/method=rep.json").read_text())
    assert record["rule"] == "make" and record["wildcards"] == {"method": "rep"}
    table, root = record["outputs"]
    assert table == {
        **table,
        "name": "table",
        "path": "results/t/rep.csv",
        "type": "file",
        "size": 8,
        "sha256": sha256_file("results/t/rep.csv"),
    }
    assert root["type"] == "directory" and root["n_files"] == 2 and root["size"] == 3
    assert [f["path"] for f in root["files"]] == ["results/t/dir/sub/y.txt", "results/t/dir/x.txt"]
    assert root["files"][1]["sha256"] == sha256_file("results/t/dir/x.txt")
    assert root["sha256"] == provenance.tree_sha256(
        [("sub/y.txt", sha256_file("results/t/dir/sub/y.txt")), ("x.txt", sha256_file("results/t/dir/x.txt"))]
    )
    assert record["inputs"][0]["path"] == "resources/in.csv" and record["inputs"][0]["sha256"] == sha256_file(
        "resources/in.csv"
    )
    assert record["params"] == {"alpha": 0.5, "classes": ["A", "B"], "inner": {"seed": 9}}
    assert record["seeds"] == {
        "config.seed": 42,
        "config.dataset.synthetic.seed": 7,
        "params.inner.seed": 9,
        "derived.torch": 123,
    }
    assert record["notes"] == {"epochs": 3}
    assert record["logs"] == ["logs/make.log"]  # logs are named, never hashed
    git_head = subprocess.run(
        ["git", "-C", str(provenance.REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert record["code"]["git_commit"] == git_head and isinstance(record["code"]["git_dirty"], bool)
    assert record["code"]["n_code_files"] > 10 and len(record["code"]["code_sha256"]) == 64
    assert record["environment"]["packages"]["numpy"] and record["environment"]["python"]
    assert record["gpu"] is None  # this job never initialised CUDA
    assert record["started"] <= record["ended"]


def test_the_record_names_the_cpu_and_the_instruction_set_of_torchs_kernels(monkeypatch):
    # CPU training is bit-reproducible only on the same instruction set (docs/lineage.md), so a
    # reviewer comparing weights needs it: torch's own answer, and the variables that cap it
    import torch

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    cpu = provenance.environment()["cpu"]
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability() != ""
    assert cpu["variables"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert cpu["model"]


def test_failed_job_writes_no_record_and_missing_output_fails_the_job(workdir):
    def boom(smk):
        raise RuntimeError("bad input\n  in line 3")

    # one line for the user (the traceback went to the log once)
    with pytest.raises(SystemExit, match=r"^rule boom failed: RuntimeError: bad input / in line 3$"):
        run_rule(job("boom", outputs={"table": "results/b.csv"}), boom)
    assert not (workdir / "results/provenance/boom").exists()

    def findings(smk):  # the audit's findings, tens of them: before, all on one line joined by ' / '
        raise RuntimeError("audit failed:\n" + "\n".join(f"leak {i}: NCC 0.9" for i in range(4)))

    with pytest.raises(SystemExit) as caught:
        run_rule(job("audit", outputs={"table": "results/c.csv"}), findings)
    assert str(caught.value).splitlines() == ["rule audit failed: RuntimeError: audit failed:"] + [
        f"  leak {i}: NCC 0.9" for i in range(4)
    ]

    with pytest.raises(SystemExit, match="rule lazy failed: FileNotFoundError: .*results/never.csv"):
        run_rule(job("lazy", outputs={"table": "results/never.csv"}), lambda smk: None)
    assert not (workdir / "results/provenance/lazy").exists()


def test_seeds_and_notes_do_not_leak_into_the_next_job(workdir):
    run_rule(job("make", outputs={"table": "results/a.csv", "root": "results/d"}), make_outputs)
    run_rule(job("plain", outputs={"table": "results/p.csv"}), lambda smk: write_text(smk.output.table, "p"))
    record = json.loads((workdir / "results/provenance/plain/job.json").read_text())
    assert record["notes"] == {} and "derived.torch" not in record["seeds"]


def test_recorded_hash_is_reused_while_size_and_mtime_are_unchanged(workdir):
    """Raw data is hashed once: a consumer reuses the producer's hash (the audit never does)."""
    run_rule(job("make", outputs={"table": "results/a.csv", "root": "results/d"}), make_outputs)
    stat = os.stat("results/d/x.txt")
    with open("results/d/x.txt", "w") as fh:  # same size, mtime put back: the cache cannot tell
        fh.write("z")
    os.utime("results/d/x.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cache = provenance.HashCache.from_records()
    recorded = json.loads((workdir / "results/provenance/make/job.json").read_text())["outputs"][1]["files"][1][
        "sha256"
    ]
    assert cache.file_entry("results/d/x.txt")["sha256"] == recorded != sha256_file("results/d/x.txt")
    os.utime("results/d/x.txt")  # a new mtime: hashed again
    assert provenance.HashCache.from_records().file_entry("results/d/x.txt")["sha256"] == sha256_file("results/d/x.txt")


def test_download_record_is_embedded(workdir):
    def download(smk):
        write_text(smk.output.weights, "w")
        write_text(smk.output.weights + ".record.json", json.dumps({"url": "http://example.org/w.pth", "sha256": "ab"}))

    run_rule(
        job("download_weights_file", outputs={"weights": "resources/weights/w.pth"}, wildcards={"filename": "w.pth"}),
        download,
    )
    record = json.loads((workdir / "results/provenance/download_weights_file/filename=w.pth.json").read_text())
    assert record["download"] == {
        "resources/weights/w.pth.record.json": {"url": "http://example.org/w.pth", "sha256": "ab"}
    }


def test_malformed_record_is_named(workdir):
    bad = workdir / "results/provenance/x/job.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="results/provenance/x/job.json"):
        provenance.load_records()


def _tampered(record: dict, change: str) -> object:
    """The record with one change a tampered or corrupt folder may hold."""
    output = record["outputs"][0]
    return {
        "outputs a dict": {**record, "outputs": {"../../../etc/passwd": output}},
        "path null": {**record, "outputs": [{"path": None, "type": "file"}]},
        "size a string": {**record, "outputs": [{**output, "size": "12"}]},
        "no rule": {k: v for k, v in record.items() if k != "rule"},
        "a list": [record],
    }[change]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("outputs a dict", "'outputs' is missing or not a list"),
        ("path null", "outputs[0]: 'path' None is not a path"),
        ("size a string", "outputs[0]: results/t.csv: 'sha256' is not a string or 'size' not an integer"),
        ("no rule", "'rule' is missing or not a string"),
        ("a list", "not a JSON object"),
        (None, "not JSON: Expecting property name"),
    ],
)
def test_audit_of_a_malformed_record_is_a_finding_naming_it(workdir, change, why):
    """`temvirus audit` of a one-job results folder whose record is corrupt (``None``: truncated
    JSON, the only record) or of the wrong shape: exit 1, the report written, its finding naming
    the record and what is wrong; before, tracebacks (AttributeError, TypeError), or for the
    truncated record 'not a results folder'."""
    run_rule(job("make", outputs={"table": "results/t.csv"}), lambda smk: write_text(smk.output.table, "a\n1\n"))
    path = workdir / "results/provenance/make/job.json"
    tampered = "{not json" if change is None else json.dumps(_tampered(json.loads(path.read_text()), change))
    path.write_text(tampered, encoding="utf-8")
    temvirus = os.path.join(os.path.dirname(sys.executable), "temvirus")
    proc = subprocess.run([temvirus, "audit", "results", "--out", "out"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads((workdir / "out/audit.json").read_text())
    records = next(c for c in report["checks"] if c["name"] == "records")
    assert records["status"] == "failed" and records["findings"][0]["path"] == "results/provenance/make/job.json"
    assert why in records["findings"][0]["detail"]
    assert "results/provenance/make/job.json" in proc.stdout


def test_an_empty_provenance_folder_is_not_a_results_folder(workdir):
    (workdir / "results/provenance").mkdir(parents=True)
    temvirus = os.path.join(os.path.dirname(sys.executable), "temvirus")
    proc = subprocess.run([temvirus, "audit", "results", "--out", "out"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no lineage records in provenance/" in proc.stderr
    assert not (workdir / "out").exists()


def test_derived_seeds_are_reported_for_the_record():
    from temvirus import provenance
    from temvirus.seeding import derive_seed

    provenance.reset()
    value = derive_seed(42, "train", "custom-scratch-representative")
    assert provenance._seeds == {"train/custom-scratch-representative": value}
    provenance.reset()
    assert provenance._seeds == {}


def test_a_warning_is_one_line_of_the_jobs_log(workdir):
    import warnings

    os.makedirs("logs")

    def warn(smk):
        warnings.warn("an image without particles", UserWarning, stacklevel=1)
        write_text(smk.output.table, "a\n")

    run_rule(job("warn", outputs={"table": "results/w.csv"}, log=["logs/warn.log"]), warn)
    lines = [line for line in (workdir / "logs" / "warn.log").read_text().splitlines() if "py.warnings" in line]
    assert len(lines) == 1 and lines[0].endswith("py.warnings: UserWarning: an image without particles"), lines


def test_config_differences_name_the_keys_that_differ(tmp_path):
    recorded = {"seed": 42, "training": {"epochs": {"scratch": 30}, "lr": 0.003}, "experiments": [{"model": "a"}]}
    current = {
        "seed": 42,
        "training": {"epochs": {"scratch": 300}, "lr": 0.003, "new": 1},
        "experiments": [{"model": "b"}],
    }
    assert provenance.config_differences(recorded, recorded) == []
    assert provenance.config_differences(recorded, current) == [
        "experiments",
        "training.epochs.scratch",
        "training.new",
    ]
    # as JSON holds them: a tuple is a list, a number key a string
    assert provenance.config_differences({"a": [1, 2], "b": {"1": "x"}}, {"a": (1, 2), "b": {1: "x"}}) == []
    root = tmp_path / "provenance"
    params = {"config": current, "note": "demo run"}
    assert provenance.params_drift("report_summary", params, root) == []  # no record: nothing to compare with
    record = provenance.record_path("report_summary", {}, root)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"params": {"config": recorded, "note": "demo run"}}))
    assert provenance.params_drift("report_summary", params, root) == [
        "config.experiments",
        "config.training.epochs.scratch",
        "config.training.new",
    ]
