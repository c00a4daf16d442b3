"""The audit (temvirus.audit, `temvirus audit`, rule audit) on real workflow runs.

All cases read the session's default run (conftest.default_run) and tamper with a copy of it:
the copy hard-links every file, and a file is re-written (new inode) before it is changed, so
the cases never touch each other or the shared run. Cases on stages the workflow does not have
yet skip, saying so; the checks extend to every output the records list.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO, snakemake_cmd

from temvirus import audit as audit_mod
from temvirus.audit import leakage as audit_leakage
from temvirus.audit import lineage as audit_lineage
from temvirus.audit import render as audit_render
from temvirus.provenance import load_records

pytestmark = pytest.mark.slow


def hardlink_copy(src: Path, dst: Path) -> Path:
    """A copy of a workdir whose results are hard links (cheap; see :func:`tamper`); without
    logs (a job would truncate the shared file) and Snakemake's metadata."""
    shutil.copytree(src, dst, symlinks=True, copy_function=os.link, ignore=shutil.ignore_patterns(".snakemake", "logs"))
    return dst


def tamper(path: Path, change=None) -> None:
    """Flip one byte in the middle of ``path`` (or apply ``change`` to its bytes), keeping its
    mtime; the file is re-written first so that the hard-linked original is untouched."""
    data = path.read_bytes()
    stat = path.stat()
    path.unlink()
    if change is None:
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
    else:
        data = change(data)
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def run_cli(results: Path, out: Path | None = None) -> subprocess.CompletedProcess:
    """``temvirus audit RESULTS --out OUT`` as a reviewer runs it (``OUT`` default: ``audit_out`` beside the
    folder; ``out=results`` itself: no ``--out``)."""
    out = results.parent / "audit_out" if out is None else out
    cmd = [str(Path(sys.executable).with_name("temvirus")), "audit", str(results)]
    cmd += [] if out == results else ["--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def audit_cli(results: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """:func:`run_cli` (report in ``audit_out`` beside the folder), and the ``audit.json`` it wrote: the
    cases that check the command's output and its findings run the audit once, through the command."""
    proc = run_cli(results)
    return proc, json.loads((results.parent / "audit_out/audit.json").read_text())


def failures(result: audit_lineage.AuditResult | dict) -> list[tuple[str, str, str, str]]:
    """(check, kind, path, detail) of each finding of an audit's result or of its ``audit.json``."""
    report = result if isinstance(result, dict) else result.to_json()
    return [(c["name"], f["kind"], f["path"], f["detail"]) for c in report["checks"] for f in c["findings"]]


@pytest.fixture
def copy(default_run, tmp_path) -> Path:
    """A private hard-linked copy of the default run's workdir."""
    return hardlink_copy(default_run, tmp_path / "work")


def first(results: Path, pattern: str) -> Path:
    found = sorted(results.glob(pattern))
    if not found:
        pytest.skip(f"no {pattern} in the default run: that stage is not in the workflow yet")
    return found[0]


def test_clean_run_passes_and_checks_every_stage_present(default_run, copy):
    report = json.loads((default_run / "results/audit/audit.json").read_text())
    assert report["passed"] is True  # the workflow's own audit job
    proc, result = audit_cli(copy / "results")
    assert proc.returncode == 0 and "audit PASSED" in proc.stdout and result["passed"], proc.stdout + proc.stderr
    status = {c["name"]: c["status"] for c in result["checks"]}
    outputs = {o["path"] for r in load_records(copy / "results/provenance").values() for o in r["outputs"]}
    assert {"results/raw/images.csv", "results/raw/synthetic"} <= outputs
    if any(p.startswith("results/curation/split_") for p in outputs):
        assert status["splits"] == "passed"
    if any(p.endswith("/patches.csv") for p in outputs):
        assert status["patches"] == status["duplicates"] == status["leaks"] == "passed"
    if audit_leakage.TABLE1 in outputs:
        assert status["table1"] == "passed"
    assert (copy / "audit_out/audit_report.html").read_text().count("passed") >= 5
    # the training jobs' CPU instruction set, which bit-for-bit repetition needs (docs/lineage.md)
    capability = torch.backends.cpu.get_cpu_capability()
    assert [c["capability"] for c in result["lineage"]["cpus"]] == [capability]
    assert f"({capability})" in (copy / "audit_out/audit_report.md").read_text()


def test_a_run_given_another_config_than_the_results_warns(copy):
    """Before: with the config edited after a whole run, `snakemake --report` captioned the results with the
    new settings (a demo run of 300 epochs for models trained 30) without a word. Every invocation now
    warns, naming the settings that differ from those the run's front-page job recorded in its params."""
    same = subprocess.run(snakemake_cmd(copy, "-n"), capture_output=True, text=True, timeout=600)
    assert same.returncode == 0 and "Nothing to be done" in same.stdout + same.stderr, same.stderr[-3000:]
    assert "were made with other settings" not in same.stderr
    other = subprocess.run(
        snakemake_cmd(copy, "-n", "--config", "seed=43"), capture_output=True, text=True, timeout=600
    )
    assert other.returncode == 0, other.stderr[-3000:]
    assert (
        "Warning: results/ were made with other settings than the config given now (they differ in seed, configfiles)"
        in (other.stderr)
    )


def test_the_audit_command_never_writes_into_the_folder_it_audits(copy):
    """Before: ``temvirus audit results`` wrote into results/audit/, the workflow's own audit job's outputs:
    the workflow then took them for the job's, so a job that failed ended with a "passed" front page (and a
    command's failed audit with a "failed" one after a passed job). Now the default is ``results-audit/``
    beside the folder, and an ``--out`` inside the folder (or naming a file) is refused before any work."""
    results = copy / "results"
    job = {p.name: p.read_bytes() for p in (results / "audit").iterdir()}
    files = sorted(results.rglob("*"))
    proc = run_cli(results, out=results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"report: {copy / 'results-audit' / 'audit_report.html'}" in proc.stdout
    assert json.loads((copy / "results-audit/audit.json").read_text())["passed"] is True
    assert {p.name: p.read_bytes() for p in (results / "audit").iterdir()} == job
    for out, message in [
        (results / "tables", "--out inside the audited folder"),
        (results / "audit", "--out inside the audited folder"),
        (copy / "results-audit/audit.json", "--out is a file, not a folder"),
    ]:
        proc = run_cli(results, out=out)
        assert proc.returncode == 1 and f"temvirus audit: error: {out}: {message}" in proc.stderr, proc.stderr
    assert sorted(results.rglob("*")) == files  # nothing was left in the folder


TAMPERED = {
    "patch array": "results/patches/*/test.npy",
    "model checkpoint": "results/models/*/*/*/best.pt",
    "metrics table": "results/evaluation/*/*/*/metrics.json",
    "table 2": "results/tables/table2.csv",
    "raw image": "results/raw/synthetic/test/*/*.tif",
}


@pytest.mark.parametrize("what", TAMPERED)
def test_one_changed_byte_fails_naming_the_file(copy, what):
    target = first(copy, TAMPERED[what])
    name = target.relative_to(copy).as_posix()
    tamper(target)
    proc, result = audit_cli(copy / "results")
    assert proc.returncode == 1 and not result["passed"] and name in proc.stdout, proc.stdout + proc.stderr
    assert ("outputs", "modified", name) in {f[:3] for f in failures(result)}, proc.stdout


def test_a_job_deleted_with_its_record_fails_naming_its_files(copy):
    """error_tracing's error images removed together with its lineage record: every remaining
    record is consistent with the files, so only the list of targets the workflow's audit job
    read shows the gap; `temvirus audit` fails naming each missing file."""
    record = first(copy, "results/provenance/error_tracing/*.json")
    outputs = [o["path"] for o in json.loads(record.read_text())["outputs"]]
    audited = {
        i["path"]
        for r in (copy / "results/provenance/audit").glob("*.json")
        for i in json.loads(r.read_text())["inputs"]
    }
    targets = [p for p in outputs if p in audited]
    assert targets, (outputs, sorted(audited))
    for path in outputs:
        (copy / path).unlink()
    record.unlink()
    proc, result = audit_cli(copy / "results")
    found = {f[:3] for f in failures(result)}
    assert all(("targets", "missing", p) in found for p in targets), proc.stdout
    assert proc.returncode == 1 and all(p in proc.stdout for p in targets), proc.stdout


@pytest.mark.parametrize("deleted", ["the audit's record too", "the front page"])
def test_a_leaf_deleted_with_every_record_that_lists_it_fails(copy, deleted):
    """Before, both passed: with the audit job's record deleted too the targets went unchecked
    (any leaf job could then go), and the report's front page, made after that job, was no target."""
    if deleted == "the front page":
        gone, records = ["results/report/summary.html"], ["results/provenance/report_summary/job.json"]
        expected = ("targets", "missing", "results/report/summary.html")
    else:
        record = first(copy, "results/provenance/error_tracing/*.json")
        gone = [o["path"] for o in json.loads(record.read_text())["outputs"]]
        records = [record.relative_to(copy).as_posix(), "results/provenance/audit/job.json"]
        expected = ("targets", "no record of the workflow's audit job", "results/provenance/audit/")
    for path in gone + records:
        (copy / path).unlink()
    proc, result = audit_cli(copy / "results")
    assert expected in {f[:3] for f in failures(result)}, proc.stdout
    assert proc.returncode == 1 and expected[2] in proc.stdout, proc.stdout


PLANTED = {
    "a copy of Table 2 among the records": "results/provenance/table2/table2_alt.csv",
    "a copy of Table 2 in the audit's folder": "results/audit/table2_final.csv",
    "a model named as Snakemake's marker": "results/tables/.snakemake_timestamp",
    "a model named as a marker inside a directory output": "results/raw/synthetic/train/.snakemake_timestamp",
}


@pytest.mark.parametrize("what", PLANTED)
def test_files_planted_where_the_audit_looks_away_are_unrecorded(copy, what):
    """Before, each passed: the records' and the audit's folders were skipped whole, and a file named
    as Snakemake's (empty) marker anywhere. A forged report.html is a note: no job makes it."""
    source = "results/models/*/*/*/best.pt" if "model" in what else "results/tables/table2.csv"
    planted = copy / PLANTED[what]
    shutil.copyfile(first(copy, source), planted)
    (copy / "results/report.html").unlink(missing_ok=True)  # a hard link to the shared run's, if any
    (copy / "results/report.html").write_text("<h1>Table 2: accuracy 0.99</h1>")
    proc, result = audit_cli(copy / "results")
    assert [f[:3] for f in failures(result)] == [("unrecorded", "unrecorded", PLANTED[what])], proc.stdout
    notes = [(n["kind"], n["path"]) for c in result["checks"] for n in c["notes"]]
    assert ("not verified", "results/report.html") in notes
    assert proc.returncode == 1 and PLANTED[what] in proc.stdout and "note unrecorded: not verified" in proc.stdout


def test_a_killed_writes_temporary_among_the_records_or_the_audits_files_is_a_note(copy):
    """What passes for the audit's own is checked (above), but a killed write's temporary there is the
    workflow's own leftover, which the next write of that file removes: a note, not a finding
    (a failing audit would never reach its own write)."""
    for leftover in (
        "results/audit/.audit.json.abcd1234.part.json",
        "results/provenance/table2/.job.json.x1y2z3w4.part.json",
    ):
        (copy / leftover).write_text("{")
    result = audit_mod.audit(copy / "results")
    assert result.passed, audit_render.summary(result)
    notes = {(n["kind"], n["path"]) for c in result.checks for n in c.notes}
    assert ("temporary of a killed write", "results/audit/.audit.json.abcd1234.part.json") in notes
    assert ("temporary of a killed write", "results/provenance/table2/.job.json.x1y2z3w4.part.json") in notes


def test_image_moved_to_another_split_fails_naming_it(copy):
    split_csv = first(copy, "results/curation/split_representative.csv")
    table = pd.read_csv(split_csv, dtype={"image_id": str, "overlap_group": str})
    moved = table[table.subset == "test"].image_id.iloc[0]
    table.loc[table.image_id == moved, "subset"] = "train"
    tamper(split_csv, lambda _: table.to_csv(index=False, lineterminator="\n").encode())
    found = failures(audit_mod.audit(copy / "results"))
    assert ("outputs", "modified", "results/curation/split_representative.csv") in {f[:3] for f in found}
    assert any(f[:2] == ("splits", "split differs from its rule") and f"image {moved}:" in f[3] for f in found), found
    if (copy / "results/patches/representative/patches.csv").is_file():
        assert any(f[:2] == ("patches", "patch in wrong set") and f"image {moved}" in f[3] for f in found), found


def test_overlap_group_across_sets_and_patch_in_wrong_set_are_named(copy):
    """Semantic checks on their own: a split table whose record is rewritten to match still fails."""
    split_csv = first(copy, "results/curation/split_representative.csv")
    table = pd.read_csv(split_csv, dtype={"image_id": str, "overlap_group": str})
    a, b = table[table.subset == "train"].iloc[0], table[table.subset == "test"].iloc[0]
    table.loc[table.image_id == b.image_id, "overlap_group"] = a.overlap_group
    tamper(split_csv, lambda _: table.to_csv(index=False, lineterminator="\n").encode())
    found = failures(audit_mod.audit(copy / "results"))
    assert any(
        f[:2] == ("splits", "overlap group in two sets") and a.image_id in f[3] and b.image_id in f[3] for f in found
    ), found


def test_identical_patch_across_sets_fails_and_near_duplicate_is_listed(copy):
    """A training patch copied into the test set is leakage (named); a noisy copy is listed."""
    import numpy as np

    folder = first(copy, "results/patches/representative/patches.csv").parent
    patches = pd.read_csv(folder / "patches.csv", dtype={"patch_id": str, "image_id": str})
    train_id = patches[(patches.subset == "train") & (patches["index"] == 0)].patch_id.item()
    test_id = patches[(patches.subset == "test") & (patches["index"] == 0)].patch_id.item()
    source = np.load(folder / "train.npy")[0]

    def put(patch):
        def change(data):
            test = np.load(io.BytesIO(data))
            test[0] = patch
            buffer = io.BytesIO()
            np.save(buffer, test)
            return buffer.getvalue()

        tamper(folder / "test.npy", change)

    put(source)
    found = failures(audit_mod.audit(copy / "results"))
    assert any(
        f[:2] == ("duplicates", "identical patches") and f"train {train_id} == test {test_id}" in f[3] for f in found
    ), found
    noisy = source.astype(np.float64) + np.random.default_rng(0).normal(0, 0.01 * source.std(), source.shape)
    put(np.clip(noisy, 0, 65535).astype(np.uint16))
    result = audit_mod.audit(copy / "results")
    assert not any(f[1] == "identical patches" for f in failures(result))
    notes = [n["detail"] for c in result.checks for n in c.notes if n["kind"] == "near-duplicate"]
    assert any(n.startswith(f"train {train_id} ~ test {test_id}") for n in notes), notes


def plant_test_patch(copy: Path, make) -> tuple[pd.Series, pd.Series, list, str]:
    """Replace the first test patch of the copy by ``make(source)``, ``source`` (float) the first
    training patch of another image; returns both patch rows, the audit's leak findings and its
    summary (what ``temvirus audit`` prints)."""
    import numpy as np

    folder = first(copy, "results/patches/representative/patches.csv").parent
    patches = pd.read_csv(folder / "patches.csv", dtype={"patch_id": str, "image_id": str})
    test = patches[(patches.subset == "test") & (patches["index"] == 0)].iloc[0]
    train = patches[(patches.subset == "train") & (patches.image_id != test.image_id)].iloc[0]
    planted = make(np.load(folder / "train.npy")[train["index"]].astype(np.float64))

    def change(data):
        arrays = np.load(io.BytesIO(data))
        arrays[0] = np.clip(planted, 0, 65535).astype(arrays.dtype)
        buffer = io.BytesIO()
        np.save(buffer, arrays)
        return buffer.getvalue()

    tamper(folder / "test.npy", change)
    result = audit_mod.audit(copy / "results")
    return test, train, [f for f in failures(result) if f[0] == "leaks"], audit_render.summary(result)


def test_planted_leak_fails_the_audit_and_an_accepted_one_is_listed(copy):
    """A test patch replaced by a re-image of a training patch of another image (shifted 5 px,
    another exposure, new noise) fails the leak check naming both patches and
    their images; listed in a file of accepted leaks it becomes a note with the reason."""
    import numpy as np
    from scipy.ndimage import shift

    def reimage(source):
        moved = shift(source, (5, -3), order=3, mode="reflect") * 0.8 + 0.1 * source.mean()
        return moved + np.random.default_rng(1).normal(0, 0.05 * source.std(), source.shape)

    test, train, found, summary = plant_test_patch(copy, reimage)
    pair = f"test {test.patch_id} (image {test.image_id}) ~ train {train.patch_id} (image {train.image_id}): NCC"
    assert [f[1:3] for f in found] == [("leak", "results/patches/representative")], found
    assert found[0][3].startswith(pair), found
    assert f"FAIL leaks: leak: results/patches/representative {pair}" in summary, summary
    accepted = copy / "accepted_leaks.csv"
    accepted.write_text(
        f"method,patch_id,train_patch_id,reason\nrepresentative,{test.patch_id},{train.patch_id},planted by the test\n"
    )
    result = audit_mod.audit(copy / "results", accepted_leaks=accepted)
    leaks = next(c for c in result.checks if c.name == "leaks")
    assert leaks.status == "passed" and [n["kind"] for n in leaks.notes] == ["accepted leak"]
    assert leaks.notes[0]["detail"].startswith(pair) and leaks.notes[0]["detail"].endswith(
        "accepted: planted by the test"
    )


@pytest.mark.parametrize("turn", [(1, False), (0, True), (3, True)])
def test_a_test_patch_that_is_a_mirrored_or_turned_copy_of_a_training_patch_fails(copy, turn):
    """Before, it passed: the leak check compared patches as they are only (a copy of another image's
    training patch, turned by 90 degrees or mirrored, with another gain and noise)."""
    import numpy as np

    from temvirus.audit.leakage import transform_name

    k, flip = turn

    def turned_copy(source):
        copied = np.rot90(source, k).T if flip else np.rot90(source, k)  # as leakage._d4 turns a patch
        noise = np.random.default_rng(2).normal(0, 0.02 * source.std(), source.shape)
        return copied * 0.9 + 0.05 * source.mean() + noise

    test, train, found, _ = plant_test_patch(copy, turned_copy)
    pair = f"test {test.patch_id} (image {test.image_id}) ~ train {train.patch_id} (image {train.image_id}): NCC"
    assert [f[1:3] for f in found] == [("leak", "results/patches/representative")], found
    named = "mirrored" if flip else transform_name((-k % 4, False))  # the test patch turned back
    assert found[0][3].startswith(pair) and named in found[0][3], found


@pytest.mark.parametrize("degrees, flip", [(37.0, False), (-118.0, True)])
def test_a_test_patch_turned_by_any_angle_from_a_training_patch_fails(copy, degrees, flip):
    """Before, it passed: the turned pass tried the 90-degree turns and mirror images only (a copy of
    another image's training patch turned by hand, or a scan turned on the scanner)."""
    import re

    import numpy as np
    from scipy.ndimage import rotate

    def turned_copy(source):
        copied = rotate(source[:, ::-1] if flip else source, degrees, reshape=False, order=3, mode="reflect")
        noise = np.random.default_rng(3).normal(0, 0.05 * source.std(), source.shape)
        return copied * 0.9 + 0.05 * source.mean() + noise

    test, train, found, _ = plant_test_patch(copy, turned_copy)
    pair = f"test {test.patch_id} (image {test.image_id}) ~ train {train.patch_id} (image {train.image_id}): NCC"
    assert [f[1:3] for f in found] == [("leak", "results/patches/representative")], found
    turn = re.search(r"the test patch (mirrored, )?turned (-?\d+)°", found[0][3])
    assert found[0][3].startswith(pair) and turn, found
    # the turn that brings the test patch back onto the training patch (mirrored first)
    back = degrees if flip else -degrees
    assert bool(turn[1]) == flip and abs((int(turn[2]) - back + 180) % 360 - 180) <= 2, found


def test_unrecorded_and_missing_files_are_reported(copy):
    (copy / "results/tables").mkdir(parents=True, exist_ok=True)
    (copy / "results/tables/extra.csv").write_text("a\n1\n")
    (copy / "results/raw/particles.csv").unlink()
    proc, result = audit_cli(copy / "results")
    found = {f[:3] for f in failures(result)}
    assert ("unrecorded", "unrecorded", "results/tables/extra.csv") in found
    assert ("outputs", "missing", "results/raw/particles.csv") in found
    assert proc.returncode == 1 and "results/tables/extra.csv" in proc.stdout


def test_an_unreadable_record_is_named_and_the_others_still_trace_their_files(copy, default_run):
    name = "results/provenance/table2/job.json"
    tamper(first(copy, name), lambda data: data[: len(data) // 2])  # cut short, as by a full disk
    result = audit_mod.audit(copy / "results")
    found = failures(result)
    assert ("records", "unreadable", name) in {f[:3] for f in found}, audit_render.summary(result)
    record = json.loads((default_run / name).read_text())
    untraced = {f[2] for f in found if f[0] == "unrecorded"}
    assert untraced == {o["path"] for o in record["outputs"]}  # that job's files only
    assert {f[0] for f in found} <= {"records", "unrecorded", "lineage", "inputs"}, found


def test_audit_rule_fails_on_a_tampered_folder(copy):
    target = copy / "results/raw/images.csv"
    tamper(target)
    proc = subprocess.run(
        snakemake_cmd(copy, "--forcerun", "audit", "results/audit/audit.json"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0, proc.stderr[-3000:]
    log = (copy / "logs/audit/audit.log").read_text()
    assert "audit FAILED" in log and "modified: results/raw/images.csv" in log, log
    assert not (copy / "results/audit/audit.json").exists()  # no "passed" report is left behind
    # nor the earlier run's front page, which said "Audit PASSED" (it stayed, read by whoever opened it)
    assert not (copy / "results/report/summary.html").exists(), log


def plant_former_job(copy: Path, record: Path, old: str, new: str, stale_input: str | None = None) -> Path:
    """A record (and its files) of a job of a former configuration beside the run's: ``record`` copied
    with ``old`` replaced by ``new`` in its name, its outputs and their paths (an experiment's split
    method, since dropped from the config); ``stale_input``: one of its inputs recorded with the hash
    a former run's producer wrote (the input has since been made anew). Returns the planted record."""
    planted = json.loads(record.read_text())
    for entry in planted["outputs"]:
        source = copy / entry["path"]
        entry["path"] = entry["path"].replace(old, new)
        (copy / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy / entry["path"])
    for entry in planted["inputs"]:
        if entry["path"] == stale_input:
            entry["sha256"] = "0" * 64
    planted["wildcards"] = {k: v.replace(old, new) for k, v in planted["wildcards"].items()}
    path = record.with_name(record.name.replace(old, new))
    path.write_text(json.dumps(planted))
    return path


def test_records_of_a_former_configuration_are_noted_not_failed(copy):
    """Before: with an experiment dropped from the config (or a split method, a class), its records and
    files stayed, and once something upstream changed (augment.per_class) the workflow's audit job
    failed for good ("inconsistent: .../train_augmented.npy", the dropped job having read the former
    one; rerunning could not help), as did a dropped split method's table ("split differs from its
    rule" once the kept images changed). Now a record that made none of the run's targets, nor an
    input of a job that did, is noted as left over, with its files, and not checked: by the audit
    job (its inputs are the targets) and by `temvirus audit` (the targets its record lists)."""
    models = copy / "results/provenance/train_model"
    trained = plant_former_job(
        copy,
        first(models, "model=*__method=representative.json"),
        "representative",
        "given",
        "results/patches/representative/train_augmented.npy",
    )
    split = plant_former_job(
        copy, copy / "results/provenance/split/method=representative.json", "representative", "given"
    )
    planted = {p.relative_to(copy).as_posix() for p in (trained, split)}
    proc = subprocess.run(
        snakemake_cmd(copy, "--forcerun", "audit", "results/audit/audit.json"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (copy / "logs/audit/audit.log").read_text()[-3000:]
    for report in [json.loads((copy / "results/audit/audit.json").read_text()), audit_cli(copy / "results")[1]]:
        assert report["passed"], failures(report)
        notes = {n["path"]: n["detail"] for c in report["checks"] for n in c["notes"] if n["kind"] == "left over"}
        assert set(notes) == planted, notes
        assert "results/curation/split_given.csv not checked" in notes[split.relative_to(copy).as_posix()]


def test_audit_rule_passes_beside_a_former_runs_record_of_the_job_after_it(copy):
    """Before: a rerun after the raw data changed (a local folder edited) failed at its audit job, with
    "inconsistent: results/raw/images.csv": the record of the report's front page (``report_summary``,
    which reads the audit's report, so runs after it) was still the former run's. The job now notes it;
    ``temvirus audit`` afterwards still fails while that job has not run again."""
    record = copy / "results/provenance/report_summary/job.json"
    former = json.loads(record.read_text())
    for entry in former["inputs"]:
        if entry["path"] == "results/raw/images.csv":
            entry["sha256"] = "0" * 64  # what the former run's raw_tables wrote
    tamper(record, lambda _: json.dumps(former).encode())
    proc = subprocess.run(
        snakemake_cmd(copy, "--forcerun", "audit", "results/audit/audit.json"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (copy / "logs/audit/audit.log").read_text()
    report = json.loads((copy / "results/audit/audit.json").read_text())
    notes = [(n["kind"], n["path"]) for c in report["checks"] for n in c["notes"]]
    assert ("after the audit", "results/provenance/report_summary/job.json") in notes, notes
    proc, result = audit_cli(copy / "results")
    assert proc.returncode == 1
    assert ("lineage", "inconsistent", "results/raw/images.csv") in {f[:3] for f in failures(result)}, proc.stdout


def test_audit_or_fail_writes_the_report_only_when_the_audit_passes(tmp_path, monkeypatch):
    """The rule's function on a one-job results folder (no default run needed)."""
    from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake, Wildcards

    from temvirus.io import write_text
    from temvirus.smk import run_rule

    monkeypatch.chdir(tmp_path)
    smk = Snakemake(
        InputFiles(fromdict={}),
        OutputFiles(fromdict={"table": "results/t.csv"}),
        Params(fromdict={}),
        Wildcards(fromdict={}),
        1,
        ResourceList(),
        Log([]),
        {"seed": 42},
        "make",
        None,
    )
    run_rule(smk, lambda job: write_text(job.output.table, "a\n1\n"))
    report = [tmp_path / "out" / name for name in ("audit_report.md", "audit_report.html", "audit.json")]
    result = audit_mod.audit_or_fail("results", *report)
    assert result.passed and all(p.is_file() for p in report)
    assert json.loads(report[2].read_text())["passed"] is True
    for p in report:
        p.unlink()
    tamper(tmp_path / "results/t.csv")
    with pytest.raises(audit_mod.AuditFailed, match=r"(?s)results: audit failed:.*modified: results/t.csv"):
        audit_mod.audit_or_fail("results", *report)
    assert not any(p.exists() for p in report)


def test_snakemake_report_is_one_file_with_every_stage(default_run, copy):
    shutil.copytree(default_run / ".snakemake/metadata", copy / ".snakemake/metadata")  # job facts the report shows
    proc = subprocess.run(
        snakemake_cmd(copy, "--report", "results/report.html"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (copy / "results/report.html").read_text()
    rules = "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    categories = set(re.findall(r'(?<!sub)category="([^"]+)"', rules))
    assert "6 Audit" in categories and all(c in html for c in categories), categories


def test_html_report_has_date_coloured_verdict_and_no_markdown_leftovers():
    passed = audit_lineage.AuditResult(
        "results", [audit_lineage.Check("x", "A `code` check")], audit_lineage.lineage_summary({})
    )
    finding = {"kind": "modified", "path": "a`b`", "detail": "<d>"}
    failed = audit_lineage.AuditResult(
        "results", [audit_lineage.Check("x", "A check", findings=[finding])], audit_lineage.lineage_summary({})
    )
    for result, colour, verdict in ((passed, "#1b7a2f", "PASSED"), (failed, "#b3261e", "FAILED")):
        page = audit_render.to_html(result)
        assert f"<p class='verdict' style='background:{colour}'>Audit {verdict}, {result.date}</p>" in page
        assert "`" not in page and "<code>" in page and "<d>" not in page  # code spans rendered, text escaped
        assert result.to_json()["date"] == result.date
