"""The audit: check a results folder against its lineage records, and its splits for leakage.

:func:`audit` runs every check on ``RESULTS_DIR`` (what ``temvirus audit RESULTS_DIR`` and
the ``audit`` rule call) and returns an :class:`AuditResult`; :func:`write_report` writes it as
``audit_report.md``, ``audit_report.html`` and ``audit.json``. Checks:

* ``outputs``: every output in a record is re-hashed (every byte, no cached hash): modified
  and missing files fail.
* ``inputs``: inputs no record produced (the paper's tables, a local raw dataset) are
  re-hashed when present; absent ones outside the results folder are listed, not failed.
* ``lineage``: each recorded input's hash equals the hash its producer recorded, so every
  job consumed exactly what the job before it wrote.
* ``unrecorded``: files under the results folder that no record claims fail (except
  :data:`NOT_RECORDED`).
* ``splits``: per split table, no image and no overlap group in two sets, no raw image
  (by content hash) under two names in two sets, only kept images, and the sets equal what
  the split's rule gives from ``images_kept.csv``.
* ``patches``: every patch's image is in the set the split table says; arrays match the table;
  every augmented training patch is a D4 transform of a training patch.
* ``duplicates``: byte-identical patches in two sets fail; near-duplicates (64-bit DCT
  perceptual hash within :data:`NEAR_HAMMING` bits) are listed.
* ``table1``: the counts of ``results/tables/table1.csv`` follow from the split and patch tables.

A check whose inputs are not in the folder (a stage not run) is reported "not checked".
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from temvirus.io import sha256_file, write_json, write_text
from temvirus.provenance import SNAKEMAKE_MARKERS, iter_tree, load_records, tree_sha256

log = logging.getLogger(__name__)

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
#: near-duplicate patches: perceptual hashes at most this many bits apart (of 64)
NEAR_HAMMING = 4
#: at most this many near-duplicate pairs are listed per pair of sets
MAX_LISTED = 200
SETS = ("train", "validation", "test")

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
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

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
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: results folder not found")
        self._hashes: dict[Path, str] = {}

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
                    check.inform("not available", item["path"], f"outside the results folder, recorded by {rec_path}; not verified")
                elif not path.is_file():
                    check.fail("missing", item["path"], f"recorded by {rec_path}")
                elif path.stat().st_size != item["size"] or folder.sha256(path) != item["sha256"]:
                    check.fail("modified", item["path"], f"sha256 {folder.sha256(path)[:16]}..., recorded {item['sha256'][:16]}... by {rec_path}")
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
                    lineage.fail("inconsistent", entry["path"], f"{rec_path} read sha256 {entry['sha256'][:16]}..., {producer} wrote {out['sha256'][:16]}...")
                continue
            if entry["path"] in seen:
                continue
            seen.add(entry["path"])
            digest, problem = folder.current(entry)
            if digest is None and not folder.inside(entry["path"]):
                sources.inform("not available", entry["path"], f"outside the results folder, read by {rec_path}; not verified")
            elif digest is None:
                sources.fail(problem, entry["path"], f"read by {rec_path}")
            elif digest != entry["sha256"]:
                sources.fail("modified", entry["path"], f"sha256 {digest[:16]}..., recorded {entry['sha256'][:16]}... by {rec_path}")
    sources.covered = f"{len(seen)} source inputs"
    lineage.covered = f"{n_links} inputs made by another job"
    return sources, lineage


def check_unrecorded(folder: Folder, records: dict[Path, dict]) -> Check:
    check = Check("unrecorded", "Files no record accounts for")
    produced = _produced(records)
    n = 0
    for path in sorted(p for p in folder.root.rglob("*") if p.is_file()):
        rel = path.relative_to(folder.root)
        if rel.parts[0] in NOT_RECORDED or path.name in SNAKEMAKE_MARKERS:
            continue
        n += 1
        name = Path(RESULTS_PREFIX, rel).as_posix()
        if name not in produced:
            check.fail("unrecorded", name, "no job record lists this file")
    check.covered = f"{n} files under the results folder (not expected in records: {', '.join(NOT_RECORDED)})"
    return check


def lineage_summary(records: dict[Path, dict]) -> dict:
    """Who made the results: rules, code versions, environments, seeds, hosts, GPUs, times."""

    def distinct(values) -> list:
        return sorted({json.dumps(v, sort_keys=True) for v in values})

    recs = list(records.values())
    return {
        "jobs": len(recs),
        "rules": dict(sorted(Counter(r["rule"] for r in recs).items())),
        "records_sha256": tree_sha256((str(p.relative_to(p.parents[1])), sha256_file(p)) for p in records),
        "code": [json.loads(v) for v in distinct(r.get("code") for r in recs)],
        "packages": [json.loads(v) for v in distinct(r.get("environment", {}).get("packages") for r in recs)],
        "python": [json.loads(v) for v in distinct(r.get("environment", {}).get("python") for r in recs)],
        "hosts": [json.loads(v) for v in distinct(r.get("environment", {}).get("host") for r in recs)],
        "gpus": [json.loads(v) for v in distinct(r.get("gpu") for r in recs if r.get("gpu"))],
        "seeds": [json.loads(v) for v in distinct(r.get("seeds", {}) for r in recs)],
        "first_start": min((r["started"] for r in recs), default=None),
        "last_end": max((r["ended"] for r in recs), default=None),
    }


# --- split and patch checks ------------------------------------------------------------------


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_id": str, "overlap_group": str, "patch_id": str, "source_patch_id": str})


def check_splits(folder: Folder) -> Check:
    from temvirus.split import METHODS, assign_split

    check = Check("splits", "Split integrity: no image, overlap group or raw file in two sets")
    tables = [p for m in METHODS if (p := folder.local(f"results/curation/split_{m}.csv")).is_file()]
    if not tables:
        check.skipped = f"no results/curation/split_{{{','.join(METHODS)}}}.csv (curation stage not run)"
        return check
    kept_path = folder.local("results/curation/images_kept.csv")
    kept = _read(kept_path).set_index("image_id") if kept_path.is_file() else None
    raw_path = folder.local("results/raw/images.csv")
    raw = _read(raw_path).set_index("image_id") if raw_path.is_file() else None
    sizes = []
    for path in tables:
        name = Path(RESULTS_PREFIX, path.relative_to(folder.root)).as_posix()
        method = path.stem.removeprefix("split_")
        table = _read(path)
        rows_per_image = table.image_id.value_counts()
        for image in sorted(rows_per_image.index[rows_per_image > 1]):
            check.fail("image listed twice", name, f"image {image}: {sorted(table.split[table.image_id == image])}")
        for group, sets in table.groupby("overlap_group")["split"].unique().items():
            if len(sets) > 1:
                members = sorted(table.image_id[table.overlap_group == group])
                check.fail("overlap group in two sets", name, f"group {group} ({', '.join(members)}): {sorted(sets)}")
        if raw is not None:
            digests = raw["sha256"].reindex(table.image_id).to_numpy()
            for digest, sets in table.assign(sha256=digests).groupby("sha256")["split"].unique().items():
                if len(sets) > 1:
                    names = sorted(table.image_id[digests == digest])
                    check.fail("same raw file in two sets", name, f"images {', '.join(names)} have equal bytes: {sorted(sets)}")
        if kept is not None:
            known = table.image_id.isin(kept.index)
            for image in table.image_id[~known]:
                check.fail("unknown image", name, f"image {image} is not in images_kept.csv")
            rows = kept.reindex(table.image_id[known])
            for image in rows.index[~rows["kept"].astype(bool)]:
                check.fail("removed image used", name, f"image {image} was removed by overlap removal")
            with warnings.catch_warnings():  # images without particles: left out, as by the rule
                warnings.simplefilter("ignore")
                expected = assign_split(kept.reset_index(), method).set_index("image_id")["split"]
            found = table.set_index("image_id")["split"]
            for image in sorted(set(expected.index) | set(found.index)):
                want, got = expected.get(image), found.get(image)
                if want != got:
                    check.fail("split differs from its rule", name, f"image {image}: in {got}, the {method} rule gives {want}")
        sizes.append(f"{path.name}: {len(table)} images, {table.overlap_group.nunique()} overlap groups")
    check.covered = "; ".join(sizes) + ("" if kept is not None else " (images_kept.csv absent: rule not re-derived)")
    return check


def _subset_arrays(pdir: Path) -> dict[str, np.ndarray]:
    return {s: np.load(pdir / f"{s}.npy", mmap_mode="r") for s in SETS if (pdir / f"{s}.npy").is_file()}


def _patch_dirs(folder: Folder, check: Check) -> list[Path]:
    """The patch folders of the results (one per split method); marks ``check`` skipped if none."""
    dirs = sorted(p.parent for p in folder.local("results/patches").glob("*/patches.csv"))
    if not dirs:
        check.skipped = "no results/patches/*/patches.csv (patches stage not run)"
    return dirs


def check_patches(folder: Folder) -> Check:
    from temvirus.augment import apply_transform

    check = Check("patches", "Every patch comes from an image of the set its split table names")
    dirs = _patch_dirs(folder, check)
    if not dirs:
        return check
    n = 0
    for pdir in dirs:
        split_path = folder.local(f"results/curation/split_{pdir.name}.csv")
        name = Path(RESULTS_PREFIX, (pdir / "patches.csv").relative_to(folder.root)).as_posix()
        patches = _read(pdir / "patches.csv")
        n += len(patches)
        if split_path.is_file():
            split = _read(split_path).set_index("image_id")
            want = split["split"].reindex(patches.image_id).to_numpy()
            for row in patches[want != patches.subset.to_numpy()].itertuples():
                where = split["split"].get(row.image_id, "no split")
                check.fail("patch in wrong set", name, f"patch {row.patch_id} ({row.subset}) of image {row.image_id} (split table: {where})")
        else:
            check.fail("no split table", name, f"{split_path.name} is missing")
        arrays = _subset_arrays(pdir)
        for subset, array in arrays.items():
            rows = patches[patches.subset == subset]
            if len(array) != len(rows) or sorted(rows["index"]) != list(range(len(rows))):
                check.fail("array/table mismatch", name, f"{subset}.npy has {len(array)} rows, table {len(rows)} patches")
        csv, npy = pdir / "train_augmented.csv", pdir / "train_augmented.npy"
        if csv.is_file() and npy.is_file() and "train" in arrays:
            aug_name = Path(RESULTS_PREFIX, csv.relative_to(folder.root)).as_posix()
            aug, aug_arr = _read(csv), np.load(npy, mmap_mode="r")
            train = patches[patches.subset == "train"].set_index("patch_id")
            for row in aug.itertuples():
                if row.source_patch_id not in train.index:
                    check.fail("augmented from a non-training patch", aug_name, f"row {row.index}: source {row.source_patch_id}")
                elif not np.array_equal(aug_arr[row.index], apply_transform(arrays["train"][train.at[row.source_patch_id, "index"]], row.transform)):
                    check.fail("augmented patch differs from its source", aug_name, f"row {row.index}: not {row.transform} of {row.source_patch_id}")
    check.covered = f"{n} patches in {len(dirs)} patch sets, with their arrays and augmented training sets"
    return check


def patch_hashes(array: np.ndarray, chunk: int = 256) -> tuple[list[str], np.ndarray]:
    """Per patch: sha256 of its bytes, and a 64-bit perceptual hash (uint64).

    The perceptual hash: the patch averaged down to 32x32, its 2-D DCT, and one bit per
    coefficient of the lowest 8x8 frequencies, set where it exceeds their median.
    """
    from scipy.fft import dctn

    exact, phash = [], []
    n, h, w = array.shape
    for start in range(0, n, chunk):
        block = np.asarray(array[start : start + chunk])
        exact.extend(hashlib.sha256(p.tobytes()).hexdigest() for p in block)
        small = block[:, : h // 32 * 32, : w // 32 * 32].astype(np.float64)
        small = small.reshape(len(block), 32, h // 32, 32, w // 32).mean(axis=(2, 4))
        low = dctn(small, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(block), 64)
        bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
        phash.append(np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64))
    return exact, np.concatenate(phash) if phash else np.zeros(0, np.uint64)


def check_duplicates(folder: Folder, max_hamming: int = NEAR_HAMMING) -> Check:
    check = Check("duplicates", f"Patches repeated across sets (exact; near: <= {max_hamming} of 64 hash bits)")
    dirs = _patch_dirs(folder, check)
    if not dirs:
        return check
    n = 0
    for pdir in dirs:
        patches = _read(pdir / "patches.csv")
        hashes = {}
        for subset, array in _subset_arrays(pdir).items():
            ids = patches[patches.subset == subset].sort_values("index").patch_id.to_numpy()
            if len(ids) == len(array):
                hashes[subset] = (ids, *patch_hashes(array))
                n += len(ids)
        for i, a in enumerate(SETS):
            for b in SETS[i + 1 :]:
                if a not in hashes or b not in hashes:
                    continue
                (ids_a, exact_a, ph_a), (ids_b, exact_b, ph_b) = hashes[a], hashes[b]
                where = f"results/patches/{pdir.name}"
                first = dict(zip(exact_a, ids_a))
                for digest, pid in zip(exact_b, ids_b):
                    if digest in first:
                        check.fail("identical patches", where, f"{a} {first[digest]} == {b} {pid}")
                pairs = 0
                for start in range(0, len(ph_a), 1024):
                    dist = np.bitwise_count(ph_a[start : start + 1024, None] ^ ph_b[None, :])
                    for r, c in zip(*np.nonzero(dist <= max_hamming)):
                        pairs += 1
                        if pairs <= MAX_LISTED:
                            check.inform("near-duplicate", where, f"{a} {ids_a[start + r]} ~ {b} {ids_b[c]} ({int(dist[r, c])} bits)")
                if pairs > MAX_LISTED:
                    check.inform("near-duplicates not listed", where, f"{pairs - MAX_LISTED} more {a}/{b} pairs")
    check.covered = f"{n} patches hashed, {len(dirs)} patch sets"
    return check


TABLE1 = "results/tables/table1.csv"


def check_table1(folder: Folder, records: dict[Path, dict]) -> Check:
    """Recount Table 1 (images, particles, patches per class and subset, ``all``/``total``
    sums) from the split and patch tables its job's record says it was made from."""
    check = Check("table1", "Table 1 counts follow from the split and patch tables")
    made = [r for r in records.values() if any(o["path"] == TABLE1 for o in r["outputs"])]
    if not folder.local(TABLE1).is_file() or not made:
        check.skipped = f"no {TABLE1} with a lineage record (table stage not run)"
        return check
    inputs = [e["path"] for e in made[0]["inputs"]]
    split_csv = next((p for p in inputs if Path(p).name.startswith("split_")), None)
    patches_csv = next((p for p in inputs if Path(p).name == "patches.csv"), None)
    if split_csv is None or patches_csv is None:
        check.fail("unknown sources", TABLE1, f"its record names no split table and patch table among {inputs}")
        return check
    split, patches, table = _read(folder.local(split_csv)), _read(folder.local(patches_csv)), pd.read_csv(folder.local(TABLE1))
    for row in table.itertuples():
        images = split if row[1] == "all" else split[split["class"] == row[1]]
        members = patches if row[1] == "all" else patches[patches["class"] == row[1]]
        if row.subset != "total":
            images, members = images[images["split"] == row.subset], members[members["subset"] == row.subset]
        want = {"images": len(images), "particles": int(images["n_particles"].sum()), "patches": len(members)}
        for column, value in want.items():
            if getattr(row, column) != value:
                check.fail("count differs", TABLE1, f"{row[1]} {row.subset} {column}: table {getattr(row, column)}, recounted {value}")
    classes = set(split["class"]) | {"all"}
    if set(table["class"]) != classes:
        check.fail("classes differ", TABLE1, f"table classes {sorted(set(table['class']) ^ classes)} differ from {split_csv}")
    check.covered = f"{len(table)} rows of {TABLE1} recounted from {split_csv} and {patches_csv}"
    return check


# --- the audit ------------------------------------------------------------------------------


def audit(results_dir: str | os.PathLike, max_hamming: int = NEAR_HAMMING) -> AuditResult:
    """Run every check on a results folder (see the module docstring)."""
    started = time.perf_counter()
    folder = Folder(results_dir)
    records_check = Check("records", "Lineage records readable")
    records = {}
    try:
        records = {p: r for p, r in load_records(folder.root / "provenance").items() if r["rule"] != AUDIT_RULE}
    except ValueError as exc:
        records_check.fail("unreadable", str(exc).split(":")[0], str(exc))
    if not records and not records_check.findings:
        records_check.fail("no records", "results/provenance", "no lineage records: the files cannot be traced")
    records_check.covered = f"{len(records)} job records"
    outputs = check_outputs(folder, records)
    inputs, lineage = check_inputs(folder, records)
    checks = [records_check, outputs, inputs, lineage, check_unrecorded(folder, records), check_splits(folder), check_patches(folder), check_duplicates(folder, max_hamming), check_table1(folder, records)]
    return AuditResult(str(results_dir), checks, lineage_summary(records), time.perf_counter() - started)


# --- the report -------------------------------------------------------------------------------


def _blocks(result: AuditResult) -> list[tuple]:
    """The report as blocks (``h``, ``p``, ``table``), rendered to Markdown and HTML."""
    verdict = "PASSED" if result.passed else "FAILED"
    lin = result.lineage
    blocks = [
        ("h", 1, f"Audit of {result.results_dir}: {verdict}"),
        ("p", f"Audited {result.date}. {lin['jobs']} job records; audit took {result.seconds:.1f} s. Records digest (sha256 over every record file): `{lin['records_sha256']}`."),
        ("table", ["check", "status", "covered", "findings", "notes"],
         [[c.title, c.status, c.skipped or c.covered, str(len(c.findings)), str(len(c.notes))] for c in result.checks]),
        ("h", 2, "Findings"),
    ]  # fmt: skip
    findings = [[c.name, f["kind"], f["path"], f["detail"]] for c in result.checks for f in c.findings]
    blocks.append(("table", ["check", "kind", "file", "detail"], findings) if findings else ("p", "None."))
    notes = [[c.name, n["kind"], n["path"], n["detail"]] for c in result.checks for n in c.notes]
    if notes:
        blocks += [("h", 2, "Notes (not failures)"), ("table", ["check", "kind", "file", "detail"], notes)]
    blocks += [
        ("h", 2, "Who made these results"),
        ("table", ["rule", "jobs"], [[k, str(v)] for k, v in lin["rules"].items()]),
        ("table", ["git commit", "dirty", "code sha256", "files"],
         [[str(c.get("git_commit")), str(c.get("git_dirty")), str(c.get("code_sha256")), str(c.get("n_code_files"))] for c in lin["code"] if c]),
        ("table", ["package", "versions"],
         [[k, ", ".join(sorted({str(p.get(k)) for p in lin["packages"] if p}))] for k in sorted({k for p in lin["packages"] if p for k in p})]),
        ("p", f"Python {', '.join(lin['python'])}; hosts {', '.join(lin['hosts'])}; GPUs {json.dumps(lin['gpus']) if lin['gpus'] else 'none used'}; "
              f"jobs ran from {lin['first_start']} to {lin['last_end']}."),
        ("table", ["seed", "values"],
         [[k, ", ".join(sorted({str(s[k]) for s in lin["seeds"] if k in s}))] for k in sorted({k for s in lin["seeds"] for k in s})]),
    ]  # fmt: skip
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(result: AuditResult) -> str:
    out = []
    for block in _blocks(result):
        if block[0] == "h":
            out.append("#" * block[1] + " " + block[2])
        elif block[0] == "p":
            out.append(block[1])
        elif block[2]:
            out.append("\n".join(["| " + " | ".join(map(_md_cell, row)) + " |" for row in [block[1], ["---"] * len(block[1]), *block[2]]]))
    return "\n\n".join(out) + "\n"


def _html_text(text) -> str:
    """Escaped text with Markdown's `code` spans as <code> (the blocks are written for Markdown)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))


def to_html(result: AuditResult) -> str:
    """The report as a self-contained HTML page, its verdict in a green (passed) or red (failed) bar."""
    colour = "#1b7a2f" if result.passed else "#b3261e"
    verdict = "PASSED" if result.passed else "FAILED"
    out = [f"<p class='verdict' style='background:{colour}'>Audit {verdict}, {html.escape(result.date)}</p>"]
    for block in _blocks(result):
        if block[0] == "h":
            out.append(f"<h{block[1]}>{_html_text(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            out.append(f"<p>{_html_text(block[1])}</p>")
        elif block[2]:
            head = "".join(f"<th>{_html_text(c)}</th>" for c in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_html_text(c)}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><tr>{head}</tr>{rows}</table>")
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #999;padding:2px 6px;text-align:left;font-size:90%}"
        ".verdict{color:white;font-weight:bold;padding:6px 10px}"
    )
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Audit</title><style>{style}</style></head><body>{''.join(out)}</body></html>\n"


def write_report(result: AuditResult, report_md, report_html, report_json) -> None:
    write_text(report_md, to_markdown(result))
    write_text(report_html, to_html(result))
    write_json(report_json, result.to_json())


class AuditFailed(RuntimeError):
    """The audit found modified, missing, unrecorded or leaking files."""


def summary(result: AuditResult) -> str:
    """One line per check, then one per failing finding."""
    lines = [f"audit {'PASSED' if result.passed else 'FAILED'} in {result.seconds:.1f} s"]
    lines += [f"  {c.status:11s} {c.title}: {c.skipped or c.covered}" for c in result.checks]
    lines += [f"  FAIL {c.name}: {f['kind']}: {f['path']} {f['detail']}" for c in result.checks for f in c.findings]
    return "\n".join(lines)


def command(args) -> int:
    """``temvirus audit RESULTS_DIR [--out DIR] [--near-bits N]`` (arguments in :mod:`temvirus.cli`):
    print the summary, write the report; exit status 1 on any finding."""
    result = audit(args.results_dir, max_hamming=NEAR_HAMMING if args.near_bits is None else args.near_bits)
    out = Path(args.out) if args.out else Path(args.results_dir) / "audit"
    write_report(result, out / "audit_report.md", out / "audit_report.html", out / "audit.json")
    print(summary(result))
    print(f"report: {out / 'audit_report.html'}")
    return 0 if result.passed else 1


def run(smk) -> None:
    """Rule ``audit``: audit ``results/`` and write the report; fail the job on any finding
    (the report is in the log then, since Snakemake removes the failed job's outputs)."""
    result = audit(RESULTS_PREFIX, max_hamming=smk.params.max_hamming)
    log.info("%s", summary(result))
    if not result.passed:
        raise AuditFailed(f"{RESULTS_PREFIX}: audit failed:\n{summary(result)}")
    write_report(result, smk.output.md, smk.output.html, smk.output.json)
