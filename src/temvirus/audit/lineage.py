"""Generic lineage checks of a results folder against its job records (:mod:`temvirus.provenance`).

The check and result types of the audit (:class:`Check`, :class:`AuditResult`), the results
folder (:class:`Folder`) and the checks any Snakemake workflow with such records can run:
outputs re-hashed, source inputs re-hashed, each input what its producer wrote, no unrecorded
file; :func:`lineage_summary` says who made the results. Part of :mod:`temvirus.audit`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from temvirus.io import TEMPORARY, sha256_file
from temvirus.provenance import is_marker, iter_tree, tree_sha256

#: the records' paths name the results folder like this (relative to the workflow's workdir)
RESULTS_PREFIX = "results"
#: top-level entries of the results folder that are not outputs of a job, and why
NOT_RECORDED = {
    "provenance": "the lineage records themselves",
    "audit": "the audit's own report (rewritten by every audit)",
    "report.html": "made by `snakemake --report` from recorded results, outside any job",
}
#: the audit rule's records are skipped like its folder
AUDIT_RULE = "audit"
#: what the audit writes into ``results/audit/`` (:func:`temvirus.audit.render.write_report`); any other
#: file there is unrecorded
AUDIT_FILES = frozenset({"audit.json", "audit_report.md", "audit_report.html"})
#: the report's front page: made after the workflow's audit job (it shows its verdict), so not among
#: that job's targets; checked to be there, recorded, by :func:`check_targets`
FRONT_PAGE = "results/report/summary.html"

PASSED, FAILED, NOT_CHECKED = "passed", "failed", "not checked"


@dataclass
class Check:
    """One check: what it covered, and what it found (``findings`` fail, ``notes`` inform)."""

    name: str
    title: str
    covered: str = ""
    findings: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    skipped: str | None = None

    @property
    def status(self) -> str:
        return NOT_CHECKED if self.skipped else FAILED if self.findings else PASSED

    def fail(self, kind: str, path: str, detail: str = "") -> None:
        self.findings.append({"kind": kind, "path": path, "detail": detail})

    def inform(self, kind: str, path: str, detail: str = "") -> None:
        self.notes.append({"kind": kind, "path": path, "detail": detail})


@dataclass
class AuditResult:
    results_dir: str
    checks: list[Check]
    lineage: dict
    seconds: float = 0.0
    #: when the audit ran (UTC, ISO 8601 to the second)
    date: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        return not any(c.findings for c in self.checks)

    def to_json(self) -> dict:
        return {
            "results_dir": self.results_dir,
            "passed": self.passed,
            "date": self.date,
            "seconds": round(self.seconds, 2),
            "lineage": self.lineage,
            "checks": [{**asdict(c), "status": c.status} for c in self.checks],
        }


class Folder:
    """A results folder: maps the records' paths to files on disk and hashes each file once."""

    def __init__(self, results_dir: str | os.PathLike):
        self.root = Path(results_dir)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: a file, not a results folder")
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: results folder not found")
        self._hashes: dict[Path, str] = {}
        #: recorded outputs (files and folders) of records left over from a former configuration
        #: (:func:`run_records`): the checks of splits and patches leave them out
        self.leftovers: set[str] = set()

    def left_over(self, path: Path) -> bool:
        """Whether ``path`` (in this folder) is an output of a record left over from a former configuration."""
        return Path(RESULTS_PREFIX, path.relative_to(self.root)).as_posix() in self.leftovers

    def local(self, recorded: str) -> Path:
        """Where a recorded path is now: ``results/...`` inside this folder (whatever it is
        called), other relative paths beside it, absolute paths as they are."""
        parts = Path(recorded).parts
        if parts and parts[0] == RESULTS_PREFIX:
            return self.root.joinpath(*parts[1:])
        return Path(recorded) if Path(recorded).is_absolute() else self.root.parent / recorded

    def inside(self, recorded: str) -> bool:
        return Path(recorded).parts[:1] == (RESULTS_PREFIX,)

    def sha256(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = sha256_file(path)
        return self._hashes[path]

    def current(self, entry: dict) -> tuple[str | None, str]:
        """(sha256 now or ``None`` when missing, what differs) of a record's file/dir entry."""
        path = self.local(entry["path"])
        if entry.get("type") == "directory":
            if not path.is_dir():
                return None, "directory missing"
            return tree_sha256((p.relative_to(path).as_posix(), self.sha256(p)) for p in iter_tree(path)), ""
        return (self.sha256(path), "") if path.is_file() else (None, "missing")


# --- lineage checks ----------------------------------------------------------------------


def _produced(records: dict[Path, dict]) -> dict[str, tuple[Path, dict]]:
    """Recorded path (files and directories) -> (record file, output entry)."""
    produced = {}
    for rec_path, record in records.items():
        for entry in record["outputs"]:
            produced[entry["path"]] = (rec_path, entry)
            for item in entry.get("files", []):
                produced[item["path"]] = (rec_path, {"type": "file", **item})
    return produced


def check_outputs(folder: Folder, records: dict[Path, dict]) -> Check:
    check = Check("outputs", "Recorded outputs re-hashed")
    claimed: dict[str, Path] = {}
    n = 0
    for rec_path, record in records.items():
        for entry in record["outputs"]:
            for item in entry.get("files", [entry]) if entry.get("type") == "directory" else [entry]:
                n += 1
                if item["path"] in claimed:
                    check.fail("claimed twice", item["path"], f"by {claimed[item['path']]} and {rec_path}")
                claimed[item["path"]] = rec_path
                path = folder.local(item["path"])
                if not path.is_file() and not folder.inside(item["path"]):
                    check.inform(
                        "not available",
                        item["path"],
                        f"outside the results folder, recorded by {rec_path}; not verified",
                    )
                elif not path.is_file():
                    check.fail("missing", item["path"], f"recorded by {rec_path}")
                elif path.stat().st_size != item["size"] or folder.sha256(path) != item["sha256"]:
                    check.fail(
                        "modified",
                        item["path"],
                        f"sha256 {folder.sha256(path)[:16]}..., recorded {item['sha256'][:16]}... by {rec_path}",
                    )
    check.covered = f"{n} output files of {len(records)} job records"
    return check


def check_inputs(folder: Folder, records: dict[Path, dict]) -> tuple[Check, Check]:
    """Source inputs re-hashed, and every produced input compared with its producer's record."""
    sources = Check("inputs", "Source inputs (not made by a job) re-hashed")
    lineage = Check("lineage", "Each job's inputs are what the job before it recorded")
    produced = _produced(records)
    seen, n_links = set(), 0
    for rec_path, record in records.items():
        for entry in record.get("inputs", []):
            if entry["path"] in produced:
                n_links += 1
                producer, out = produced[entry["path"]]
                if out["sha256"] != entry["sha256"]:
                    lineage.fail(
                        "inconsistent",
                        entry["path"],
                        f"{rec_path} read sha256 {entry['sha256'][:16]}..., {producer} wrote {out['sha256'][:16]}...",
                    )
                continue
            if entry["path"] in seen or _not_recorded(entry["path"]):
                continue  # NOT_RECORDED files (the audit's own report) are rewritten by this audit
            seen.add(entry["path"])
            digest, problem = folder.current(entry)
            if digest is None and not folder.inside(entry["path"]):
                sources.inform(
                    "not available", entry["path"], f"outside the results folder, read by {rec_path}; not verified"
                )
            elif digest is None:
                sources.fail(problem, entry["path"], f"read by {rec_path}")
            elif digest != entry["sha256"]:
                sources.fail(
                    "modified",
                    entry["path"],
                    f"sha256 {digest[:16]}..., recorded {entry['sha256'][:16]}... by {rec_path}",
                )
    sources.covered = f"{len(seen)} source inputs"
    lineage.covered = f"{n_links} inputs made by another job"
    return sources, lineage


def run_records(records: dict[Path, dict], targets: list[str]) -> set[Path]:
    """The records of the run's jobs: those that made a target (``targets``: recorded paths, the inputs
    of the workflow's audit job) or an input of such a job, transitively, and those that read the
    audit's report (:func:`reads_audit_report`) with theirs. Any other record is left over from a
    former configuration (an experiment, a split method or a class no longer in the config): its
    job is not in the run, and its inputs may since have been made anew for the current one."""
    produced = _produced(records)
    run: set[Path] = set()
    paths = list(targets)
    for record in records.values():
        if reads_audit_report(record):
            paths += [entry["path"] for entry in record["outputs"]]
    while paths:
        made = produced.get(paths.pop())
        if made is not None and made[0] not in run:
            run.add(made[0])
            paths += [entry["path"] for entry in records[made[0]].get("inputs", [])]
    return run


def reads_audit_report(record: dict) -> bool:
    """Whether a lineage record's job read the audit's own report (``results/audit/``): it ran after the
    workflow's audit job (the report's front page, ``report_summary``)."""
    return any(Path(entry["path"]).parts[:2] == (RESULTS_PREFIX, "audit") for entry in record.get("inputs", []))


def _not_recorded(path: str) -> bool:
    """Whether ``path`` (``results/...``) lies in a top-level entry of :data:`NOT_RECORDED`."""
    parts = Path(path).parts
    return len(parts) > 1 and parts[0] == RESULTS_PREFIX and parts[1] in NOT_RECORDED


def _unexpected_there(rel: Path) -> str | None:
    """Why a file of a :data:`NOT_RECORDED` entry (``rel``, relative to the results folder) is not
    what belongs there, or None: ``provenance/`` holds only ``{rule}/{name}.json`` records,
    ``audit/`` only :data:`AUDIT_FILES`; anything else there would pass for the audit's own."""
    if rel.parts[0] == "provenance" and (len(rel.parts) != 3 or rel.suffix != ".json" or rel.name.startswith(".")):
        return "not a lineage record ({rule}/{name}.json), in the records' folder"
    if rel.parts[0] == "audit" and (len(rel.parts) != 2 or rel.name not in AUDIT_FILES):
        return f"not one of the audit's own files ({', '.join(sorted(AUDIT_FILES))}), in its folder"
    return None


def _training_state(rel: Path) -> bool:
    """Whether ``rel`` (relative to the results folder) is a training job's resume state,
    ``models/{model}/{init}/{method}/resume/...``: no output of the job, kept after it to write its
    outputs again should they be lost (:mod:`temvirus.train`)."""
    return len(rel.parts) >= 6 and rel.parts[0] == "models" and rel.parts[4] == "resume"


def check_unrecorded(folder: Folder, records: dict[Path, dict]) -> Check:
    """Fail on every file under the results folder that no record lists, but Snakemake's empty
    markers, the training jobs' resume state (:func:`_training_state`), the :data:`NOT_RECORDED`
    entries' own files (:func:`_unexpected_there`) and the outputs of records left over from a former
    configuration (``folder.leftovers``, noted with their records); the
    report made by ``snakemake --report`` is noted as unverified."""
    check = Check("unrecorded", "Files no record accounts for")
    produced = {**_produced(records), **dict.fromkeys(folder.leftovers)}
    n = 0
    for path in sorted(p for p in folder.root.rglob("*") if p.is_file()):
        rel = path.relative_to(folder.root)
        name = Path(RESULTS_PREFIX, rel).as_posix()
        if rel.parts[0] in NOT_RECORDED:
            why = _unexpected_there(rel)
            if why and TEMPORARY.match(path.name):  # a killed write's; the next write of that file removes it
                check.inform("temporary of a killed write", name, "left by a writer killed outright")
            elif why:
                check.fail("unrecorded", name, why)
            elif rel.parts[0] == "report.html":
                check.inform("not verified", name, f"{NOT_RECORDED['report.html']}: make it again to trust it")
            continue
        if is_marker(path) or _training_state(rel):
            continue
        n += 1
        if name not in produced:
            check.fail("unrecorded", name, "no job record lists this file")
    check.covered = (
        f"{n} files under the results folder (not expected in records: {', '.join(NOT_RECORDED)}, the training "
        "jobs' resume/ state)"
    )
    return check


def check_targets(folder: Folder, records: dict[Path, dict], audit_records: dict[Path, dict]) -> Check:
    """The workflow's targets (the inputs of its ``audit`` job, :data:`AUDIT_RULE`) still there and
    as that job audited them. A file removed together with its job's record (a whole leaf job:
    its error images, an experiment's evaluation) leaves no other trace: each remaining record
    is consistent, and only the audit job's list of what the run made shows the gap. The report's
    front page (:data:`FRONT_PAGE`), made after that job, must be there with a record too. Without
    such a record (a partial run, or that record deleted too: the gap would go unseen) the check
    fails; the workflow's own audit job, which is about to rewrite it, does not run this check."""
    check = Check("targets", "The workflow's targets as its audit job read them")
    if not audit_records:
        check.fail(
            "no record of the workflow's audit job",
            f"{RESULTS_PREFIX}/provenance/{AUDIT_RULE}/",
            "the run's targets cannot be checked (a partial run, or the record deleted): run the workflow to its "
            "end, or audit a partial run with --partial",
        )
        return check
    if not folder.local(FRONT_PAGE).is_file() or FRONT_PAGE not in _produced(records):
        check.fail(
            "missing",
            FRONT_PAGE,
            "the report's front page, made after the workflow's audit job, or its record (a run of the audit "
            "target alone: --partial)",
        )
    n = 0
    for rec_path, record in audit_records.items():
        for entry in record.get("inputs", []):
            if not folder.inside(entry["path"]) or _not_recorded(entry["path"]):
                continue
            n += 1
            digest, problem = folder.current(entry)
            if digest is None:
                check.fail(problem, entry["path"], f"a target of the run, audited by {rec_path}")
            elif digest != entry["sha256"]:
                check.fail(
                    "changed since the workflow's audit",
                    entry["path"],
                    f"sha256 {digest[:16]}..., audited {entry['sha256'][:16]}... by {rec_path}: "
                    "rerun the workflow (its audit job checks the new files)",
                )
    check.covered = f"{n} targets read by the workflow's audit job"
    return check


def lineage_summary(records: dict[Path, dict]) -> dict:
    """Who made the results: rules, code versions, environments, seeds, hosts, CPUs of torch's jobs, GPUs, times."""

    def distinct(values) -> list:
        return sorted({json.dumps(v, sort_keys=True) for v in values})

    recs = list(records.values())
    cpus = [r.get("environment", {}).get("cpu") for r in recs]
    return {
        "jobs": len(recs),
        "rules": dict(sorted(Counter(r["rule"] for r in recs).items())),
        "records_sha256": tree_sha256((str(p.relative_to(p.parents[1])), sha256_file(p)) for p in records),
        "code": [json.loads(v) for v in distinct(r.get("code") for r in recs)],
        "packages": [json.loads(v) for v in distinct(r.get("environment", {}).get("packages") for r in recs)],
        "python": [json.loads(v) for v in distinct(r.get("environment", {}).get("python") for r in recs)],
        "hosts": [json.loads(v) for v in distinct(r.get("environment", {}).get("host") for r in recs)],
        "gpus": [json.loads(v) for v in distinct(r.get("gpu") for r in recs if r.get("gpu"))],
        # the CPUs of jobs that ran torch: CPU training repeats bit for bit on one instruction set only
        "cpus": [json.loads(v) for v in distinct(c for c in cpus if c and c.get("capability") is not None)],
        "seeds": [json.loads(v) for v in distinct(r.get("seeds", {}) for r in recs)],
        "first_start": min((r["started"] for r in recs), default=None),
        "last_end": max((r["ended"] for r in recs), default=None),
    }
