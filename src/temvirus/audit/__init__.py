"""The audit: check a results folder against its lineage records, and its splits for leakage.

Modules: :mod:`~temvirus.audit.lineage` (the generic lineage checks, and the check, result and
folder types), :mod:`~temvirus.audit.leakage` (splits, patches, duplicates, leaks, Table 1),
:mod:`~temvirus.audit.render` (Markdown, HTML, JSON, summary); this module runs them.

:func:`audit` runs every check on ``RESULTS_DIR`` (what ``temvirus audit RESULTS_DIR`` and
the ``audit`` rule call) and returns an :class:`AuditResult`; :func:`write_report` writes it as
``audit_report.md``, ``audit_report.html`` and ``audit.json``. Checks:

* ``records``: every lineage record is JSON of a record's shape
  (:func:`temvirus.provenance.record_problem`: entry fields and types, outputs inside the
  workflow's folder); a malformed one fails, naming it, and its files stay untraced. A record
  left over from a former configuration (:func:`~temvirus.audit.lineage.run_records`) is noted
  with its files, which no other check then reads.
* ``outputs``: every output in a record is re-hashed (every byte, no cached hash): modified
  and missing files fail.
* ``inputs``: inputs no record produced (the paper's tables, a local raw dataset) are
  re-hashed when present; absent ones outside the results folder are listed, not failed.
* ``lineage``: each recorded input's hash equals the hash its producer recorded, so every
  job consumed exactly what the job before it wrote (in the workflow's audit job, except the
  jobs that read the audit's report: they run after it, so their records there are a former
  run's; ``temvirus audit`` checks them).
* ``unrecorded``: files under the results folder that no record claims fail (except the
  :data:`~temvirus.audit.lineage.NOT_RECORDED` entries' own files and Snakemake's empty markers;
  ``report.html`` is noted as not verified).
* ``splits``: per split table, no image and no overlap group in two sets, no raw image
  (by content hash) under two names in two sets, only kept images, and the sets equal what
  the split's rule gives from ``images_kept.csv``.
* ``patches``: every patch's image is in the set the split table says; arrays match the table;
  every augmented training patch is a D4 transform of a training patch.
* ``duplicates``: byte-identical patches in two sets fail; near-duplicates (64-bit DCT
  perceptual hash within :data:`NEAR_HAMMING` bits) are listed.
* ``leaks``: a test or validation patch that shows the same particle as a training patch of
  another image fails (max normalised cross-correlation of the band-passed patches over small
  shifts, :func:`~temvirus.audit.leakage.max_ncc`, at least :data:`LEAK_NCC`, after a nearest-neighbour
  pre-screen; or a copy of one mirrored or turned by any angle, at
  :data:`~temvirus.audit.leakage.LEAK_TURNED_NCC`), unless a reviewer's file of accepted leaks lists
  the pair with a reason.
* ``table1``: the counts of ``results/tables/table1.csv`` follow from the split and patch tables.
* ``targets`` (``temvirus audit`` only): every target of the run that the workflow's own audit
  job read (its record's inputs) is still there, unchanged: a file deleted together with its
  job's record leaves no other trace; so is the report's front page, made after that job; no
  record of that job fails.

A check whose inputs are not in the folder (a stage not run) is reported "not checked"
(except ``targets``, which fails: see ``--partial``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from temvirus.audit.leakage import (
    LEAK_NCC,
    NEAR_HAMMING,
    check_duplicates,
    check_leaks,
    check_patches,
    check_splits,
    check_table1,
    read_accepted_leaks,
)
from temvirus.audit.lineage import (
    AUDIT_RULE,
    FRONT_PAGE,
    AuditResult,
    Check,
    Folder,
    check_inputs,
    check_outputs,
    check_targets,
    check_unrecorded,
    lineage_summary,
    reads_audit_report,
    run_records,
)
from temvirus.audit.render import summary, write_report
from temvirus.provenance import read_records

log = logging.getLogger(__name__)


def audit(
    results_dir: str | os.PathLike,
    max_hamming: int = NEAR_HAMMING,
    leak_ncc: float = LEAK_NCC,
    accepted_leaks: str | os.PathLike | None = None,
    targets: bool = True,
    run_targets: list[str] | None = None,
) -> AuditResult:
    """Run every check on a results folder (see the module docstring); ``accepted_leaks``: a CSV
    of reviewed pairs (:func:`read_accepted_leaks`); ``targets``: check the targets of the
    workflow's last audit job (not in that job itself, which is about to replace its record).

    ``run_targets`` (the workflow's audit job: its inputs), or else the inputs its record lists:
    the run's targets. A record that made none of them, nor an input of a job that did
    (:func:`~temvirus.audit.lineage.run_records`), is left over from a former configuration (an
    experiment, split method or class since removed): it and its files are noted, not checked, since
    their inputs may since have been made anew. Without either (``--partial`` with no record of the
    audit job), every record is checked."""
    started = time.perf_counter()
    folder = Folder(results_dir)
    records_check = Check("records", "Lineage records readable")
    # an unreadable record is a finding; the others still trace their files
    records, unreadable = read_records(folder.root / "provenance")
    audit_records = {p: r for p, r in records.items() if r["rule"] == AUDIT_RULE}
    records = {p: r for p, r in records.items() if r["rule"] != AUDIT_RULE}
    for path, why in unreadable.items():
        records_check.fail(
            "unreadable", path.relative_to(folder.root.parent).as_posix(), f"unreadable lineage record: {why}"
        )
    if not records and not records_check.findings:
        records_check.fail("no records", "results/provenance", "no lineage records: the files cannot be traced")
    if run_targets is None and audit_records:
        run_targets = [entry["path"] for record in audit_records.values() for entry in record.get("inputs", [])]
    if run_targets is not None:
        run = run_records(records, run_targets)
        for path, record in sorted(records.items()):
            if path not in run:
                outputs = [entry["path"] for entry in record["outputs"]]
                folder.leftovers.update(outputs)
                records_check.inform(
                    "left over",
                    path.relative_to(folder.root.parent).as_posix(),
                    f"a job no longer in the run (a former configuration's): {', '.join(outputs)} not checked, "
                    "not among the run's results; delete them with this record",
                )
        records = {p: r for p, r in records.items() if p in run}
    records_check.covered = f"{len(records)} job records"
    outputs = check_outputs(folder, records)
    # in the workflow's audit job, the jobs that read its report run after it: a record of theirs is a former
    # run's, read inputs that a rerun has since replaced, and is replaced in turn once this job is done
    after = {} if targets else {p: r for p, r in records.items() if reads_audit_report(r)}
    inputs, lineage = check_inputs(folder, {p: r for p, r in records.items() if p not in after})
    for path in after:
        lineage.inform(
            "after the audit",
            path.relative_to(folder.root.parent).as_posix(),
            "a job that reads the audit's report runs after it: its inputs are checked by `temvirus audit`",
        )
    checks = [
        records_check,
        outputs,
        inputs,
        lineage,
        check_unrecorded(folder, records),
        check_splits(folder),
        check_patches(folder),
        check_duplicates(folder, max_hamming),
        check_leaks(folder, leak_ncc, read_accepted_leaks(accepted_leaks)),
        check_table1(folder, records),
    ]
    if targets:
        checks.append(check_targets(folder, records, audit_records))
    return AuditResult(str(results_dir), checks, lineage_summary(records), time.perf_counter() - started)


class AuditFailed(RuntimeError):
    """The audit found modified, missing, unrecorded or leaking files."""


def default_out(results_dir: str | os.PathLike) -> Path:
    """Where ``temvirus audit RESULTS_DIR`` writes its report without ``--out``: ``RESULTS_DIR-audit`` beside the
    folder, never inside it (``RESULTS_DIR/audit/`` is the workflow's own audit job's output)."""
    results = Path(results_dir).resolve()
    return results.with_name(f"{results.name}-audit")


def command(args) -> int:
    """``temvirus audit RESULTS_DIR [--out DIR] [--near-bits N] [--leak-ncc X] [--accepted-leaks CSV] [--partial]``
    (arguments in :mod:`temvirus.cli`):
    print the summary, write the report; exit status 1 on any finding. ``--partial``: the
    ``targets`` check is not run (a run that stopped before the workflow's audit job)."""
    result = audit(
        args.results_dir,
        max_hamming=NEAR_HAMMING if args.near_bits is None else args.near_bits,
        leak_ncc=LEAK_NCC if args.leak_ncc is None else args.leak_ncc,
        accepted_leaks=args.accepted_leaks,
        targets=not args.partial,
    )
    out = Path(args.out) if args.out else default_out(args.results_dir)
    write_report(result, out / "audit_report.md", out / "audit_report.html", out / "audit.json")
    print(summary(result))
    print(f"report: {out / 'audit_report.html'}")
    return 0 if result.passed else 1


def audit_or_fail(
    results_dir: str | os.PathLike,
    report_md: str | os.PathLike,
    report_html: str | os.PathLike,
    report_json: str | os.PathLike,
    max_hamming: int = NEAR_HAMMING,
    leak_ncc: float = LEAK_NCC,
    accepted_leaks: str | os.PathLike | None = None,
    run_targets: list[str] | None = None,
) -> AuditResult:
    """Rule ``audit``: :func:`audit` ``results_dir`` and write the report (:func:`write_report`).

    ``max_hamming``, ``leak_ncc``, ``accepted_leaks`` and ``run_targets`` (the job's inputs) are
    :func:`audit`'s. On any finding raises :class:`AuditFailed` with the summary and writes nothing
    (the summary is in the log then, since Snakemake removes the failed job's outputs), and removes
    the report's front page of an earlier run (:data:`~temvirus.audit.lineage.FRONT_PAGE`), which
    said that the audit passed.
    """
    result = audit(
        results_dir,
        max_hamming=max_hamming,
        leak_ncc=leak_ncc,
        accepted_leaks=accepted_leaks,
        targets=False,
        run_targets=run_targets,
    )
    log.info("%s", summary(result))
    if not result.passed:
        front_page = Folder(results_dir).local(FRONT_PAGE)
        if front_page.is_file():
            front_page.unlink()
            log.info("%s removed: an earlier run's front page, it says that the audit passed", front_page)
        raise AuditFailed(f"{results_dir}: audit failed:\n{summary(result)}")
    write_report(result, report_md, report_html, report_json)
    return result
