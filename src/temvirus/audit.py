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
* ``leaks``: a test or validation patch that shows the same particle as a training patch of
  another image fails (max normalised cross-correlation of the band-passed patches over small
  shifts, :func:`max_ncc`, at least :data:`LEAK_NCC`, after a nearest-neighbour
  pre-screen), unless a reviewer's file of accepted leaks lists the pair with a reason.
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
from datetime import UTC, datetime
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


def _not_recorded(path: str) -> bool:
    """Whether ``path`` (``results/...``) lies in a top-level entry of :data:`NOT_RECORDED`."""
    parts = Path(path).parts
    return len(parts) > 1 and parts[0] == RESULTS_PREFIX and parts[1] in NOT_RECORDED


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
                    check.fail(
                        "same raw file in two sets", name, f"images {', '.join(names)} have equal bytes: {sorted(sets)}"
                    )
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
                    check.fail(
                        "split differs from its rule", name, f"image {image}: in {got}, the {method} rule gives {want}"
                    )
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
                check.fail(
                    "patch in wrong set",
                    name,
                    f"patch {row.patch_id} ({row.subset}) of image {row.image_id} (split table: {where})",
                )
        else:
            check.fail("no split table", name, f"{split_path.name} is missing")
        arrays = _subset_arrays(pdir)
        for subset, array in arrays.items():
            rows = patches[patches.subset == subset]
            if len(array) != len(rows) or sorted(rows["index"]) != list(range(len(rows))):
                check.fail(
                    "array/table mismatch", name, f"{subset}.npy has {len(array)} rows, table {len(rows)} patches"
                )
        csv, npy = pdir / "train_augmented.csv", pdir / "train_augmented.npy"
        if csv.is_file() and npy.is_file() and "train" in arrays:
            aug_name = Path(RESULTS_PREFIX, csv.relative_to(folder.root)).as_posix()
            aug, aug_arr = _read(csv), np.load(npy, mmap_mode="r")
            train = patches[patches.subset == "train"].set_index("patch_id")
            for row in aug.itertuples():
                if row.source_patch_id not in train.index:
                    check.fail(
                        "augmented from a non-training patch",
                        aug_name,
                        f"row {row.index}: source {row.source_patch_id}",
                    )
                elif not np.array_equal(
                    aug_arr[row.index],
                    apply_transform(arrays["train"][train.at[row.source_patch_id, "index"]], row.transform),
                ):
                    check.fail(
                        "augmented patch differs from its source",
                        aug_name,
                        f"row {row.index}: not {row.transform} of {row.source_patch_id}",
                    )
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
                            check.inform(
                                "near-duplicate",
                                where,
                                f"{a} {ids_a[start + r]} ~ {b} {ids_b[c]} ({int(dist[r, c])} bits)",
                            )
                if pairs > MAX_LISTED:
                    check.inform("near-duplicates not listed", where, f"{pairs - MAX_LISTED} more {a}/{b} pairs")
    check.covered = f"{n} patches hashed, {len(dirs)} patch sets"
    return check


# --- leaks: the same particle in a training patch and a test/validation patch ----------------

#: patches are averaged in 2x2 blocks (2 nm/px) before they are compared
LEAK_BIN = 2
#: side of the compared central template, px at 2 nm/px (128 nm: the particle and its surroundings)
LEAK_TEMPLATE = 64
#: shifts searched, px at 2 nm/px each way (+-16 nm: two annotations of one particle differ by less)
LEAK_SHIFT = 8
#: the band compared: difference of Gaussians of these sigmas, px at 2 nm/px (structure of ~3-16 nm)
LEAK_BAND = (0.7, 4.0)
#: no-data areas (padding) are widened by this many px at 2 nm/px before they are left out
LEAK_NODATA_MARGIN = 4
#: side of the pre-screen embedding (the standardised central 160 nm averaged to 8x8: 20 nm cells)
LEAK_EMBED = 8
#: training patches of other images scored exactly per test/validation patch (its nearest in the embedding)
LEAK_NEIGHBOURS = 10
#: a max NCC at or above this is the same particle (chosen on real and synthetic data, docs/lineage.md)
LEAK_NCC = 0.85
#: columns of the file of accepted leaks (``audit.accepted_leaks``)
ACCEPTED_COLUMNS = ["split", "patch_id", "train_patch_id", "reason"]
D4 = [(k, flip) for flip in (False, True) for k in range(4)]
#: the transforms of D4 compared: the identity only. Re-imaged particles matched untransformed
#: (real crops); the 8 transforms let alike particles match (synthetic Rotavirus 0.867 in the
#: default run, filaments 0.869), and the audit compares unaugmented patches (docs/lineage.md)
LEAK_TRANSFORMS = D4[:1]


def _standardised(patches: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings (n, LEAK_EMBED**2), detail (n, 80, 80) float32)`` of the central 160 nm of each patch.

    The patch is averaged in ``LEAK_BIN`` blocks (2 nm/px: the template plus the searched shifts).
    Areas without data (padding: pixels equal to all 8 neighbours, widened by
    ``LEAK_NODATA_MARGIN`` px) are left out. ``detail`` is the band-passed patch (difference of
    Gaussians of ``LEAK_BAND`` px: the fine structure that a re-image of the same particle
    shares and a look-alike does not; smooth backgrounds, the particle's outline and padding
    edges, which look alike across fields, are removed), zero where there is no data, unit std;
    the embeddings (:func:`_embed`) are of the smooth patch, for the pre-screen.
    """
    from scipy.ndimage import gaussian_filter, maximum_filter

    n, h, w = patches.shape
    b, side = LEAK_BIN, LEAK_TEMPLATE + 2 * LEAK_SHIFT
    top, left = (h - b * side) // 2, (w - b * side) // 2
    if top < 0 or left < 0:
        raise ValueError(f"patches of {h}x{w} px are smaller than the compared {b * side} px")
    embeddings, detail = np.empty((n, LEAK_EMBED**2)), np.empty((n, side, side), dtype=np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(
            patches[start : start + chunk, top : top + b * side, left : left + b * side], dtype=np.float32
        )
        block = block.reshape(len(block), side, b, side, b).mean(axis=(2, 4))
        padded = np.pad(block, ((0, 0), (1, 1), (1, 1)), mode="edge")
        flat = np.ones(block.shape, dtype=bool)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                flat &= padded[:, dy : dy + side, dx : dx + side] == block
        nodata = maximum_filter(flat, size=(1, 2 * LEAK_NODATA_MARGIN + 1, 2 * LEAK_NODATA_MARGIN + 1))
        valid = ~nodata
        count = np.maximum(valid.sum(axis=(1, 2), keepdims=True), 1)
        mean = (block * valid).sum(axis=(1, 2), keepdims=True) / count
        block = np.where(valid, block, mean)
        embeddings[start : start + chunk] = _embed(block)
        band = gaussian_filter(block, (0, LEAK_BAND[0], LEAK_BAND[0])) - gaussian_filter(
            block, (0, LEAK_BAND[1], LEAK_BAND[1])
        )
        band = np.where(valid, band, 0.0)
        detail[start : start + chunk] = band / np.maximum(band.std(axis=(1, 2), keepdims=True), 1e-6)
    return embeddings, detail


def _d4(images: np.ndarray, transforms=LEAK_TRANSFORMS) -> list[np.ndarray]:
    """``(..., h, w)`` images under ``transforms`` (of :data:`D4`: rotation by ``k * 90`` degrees, then transposed if flipped)."""
    return [
        np.swapaxes(np.rot90(images, k, axes=(-2, -1)), -2, -1) if flip else np.rot90(images, k, axes=(-2, -1))
        for k, flip in transforms
    ]


def _embed(block: np.ndarray) -> np.ndarray:
    """``(n, LEAK_EMBED**2)`` unit vectors: ``(n, 80, 80)`` patches averaged to LEAK_EMBED x LEAK_EMBED, centred."""
    n, h, w = block.shape
    e = LEAK_EMBED
    small = block.reshape(n, e, h // e, e, w // e).mean(axis=(2, 4)).reshape(n, e * e).astype(np.float64)
    small = small - small.mean(axis=1, keepdims=True)
    return small / np.maximum(np.linalg.norm(small, axis=1, keepdims=True), 1e-9)


def candidate_pairs(
    query: np.ndarray, query_images: np.ndarray, train: np.ndarray, train_images: np.ndarray, k: int = LEAK_NEIGHBOURS
) -> np.ndarray:
    """Pre-screen: ``(m, 2)`` index pairs (query patch, training patch of another image).

    ``query``, ``train``: embeddings (:func:`_standardised`). For each query patch, the ``k``
    training patches of other images whose embedding (under any of :data:`LEAK_TRANSFORMS` of the
    training patch) is closest, found with a KD-tree (``scipy.spatial.cKDTree``).
    """
    from scipy.spatial import cKDTree

    if not len(query) or not len(train):
        return np.zeros((0, 2), dtype=np.int64)
    small = train.reshape(len(train), LEAK_EMBED, LEAK_EMBED)
    points = np.concatenate([t.reshape(len(train), -1) for t in _d4(small)])  # (transforms x n_train, e*e)
    owner = np.tile(np.arange(len(train)), len(LEAK_TRANSFORMS))
    tree = cKDTree(points)
    want = min(len(points), (k + 1) * len(LEAK_TRANSFORMS) + 32)  # room for the other transforms and same-image patches
    _, found = tree.query(query, k=want)
    pairs = set()
    for q, row in enumerate(np.atleast_2d(found)):
        kept = 0
        for t in dict.fromkeys(owner[row[row < len(points)]]):  # nearest first, each training patch once
            if train_images[t] != query_images[q]:
                pairs.add((q, int(t)))
                kept += 1
                if kept == k:
                    break
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def max_ncc(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: the largest normalised cross-correlation of ``a``'s central template with ``b``.

    ``a``, ``b``: ``(m, 80, 80)`` band-passed patches (:func:`_standardised`, 2 nm/px). The
    central ``LEAK_TEMPLATE``-px square of ``a``, under each of :data:`LEAK_TRANSFORMS`, is compared with every same-size window of ``b`` (shifts
    up to ``LEAK_SHIFT`` px each way): NCC is the Pearson correlation of the template with the
    window. Correlations by FFT (float32), window means and variances by summed-area tables.
    Returns ``(ncc, shift_px, transform)``: ncc in [-1, 1] (1 = identical up to a linear
    intensity change), the best window's ``(dy, dx)`` offset from the centre in px at 2 nm/px,
    and the index of the transform of ``a`` in :data:`LEAK_TRANSFORMS`.
    """
    from scipy.fft import ifft, irfft, rfft2

    m, h, w = a.shape
    t, s = LEAK_TEMPLATE, LEAK_SHIFT
    side, n_shift = t + 2 * s, 2 * s + 1
    if b.shape[1:] != (side, side) or (h, w) != (side, side):
        raise ValueError(f"max_ncc needs {side}x{side} standardised patches, got {a.shape[1:]} and {b.shape[1:]}")
    ncc, shift, transform = np.full(m, -1.0), np.zeros((m, 2), dtype=np.int64), np.zeros(m, dtype=np.int64)
    for start in range(0, m, chunk):
        tpl = np.stack(_d4(a[start : start + chunk, s : s + t, s : s + t]), axis=1).astype(
            np.float32
        )  # (c, transforms, t, t)
        tpl -= tpl.mean(axis=(2, 3), keepdims=True)
        tpl /= np.maximum(np.linalg.norm(tpl, axis=(2, 3), keepdims=True), 1e-6)
        region = np.ascontiguousarray(b[start : start + chunk], dtype=np.float32)  # (c, side, side)
        product = rfft2(region)[:, None] * np.conj(rfft2(tpl, s=(side, side)))
        corr = irfft(ifft(product, axis=-2)[..., :n_shift, :], n=side, axis=-1)[
            ..., :n_shift
        ]  # (c, transforms, n_shift, n_shift)
        area = np.pad(region.astype(np.float64), ((0, 0), (1, 0), (1, 0)))
        sums = area.cumsum(axis=1).cumsum(axis=2)
        squares = (area**2).cumsum(axis=1).cumsum(axis=2)

        def windows(c: np.ndarray) -> np.ndarray:
            return c[:, t:, t:] - c[:, :-t, t:] - c[:, t:, :-t] + c[:, :-t, :-t]

        var = np.maximum(windows(squares) - windows(sums) ** 2 / (t * t), 1e-9)  # (c, n_shift, n_shift)
        score = (corr / np.sqrt(var)[:, None]).reshape(len(region), -1)  # the template has zero mean, unit norm
        best = score.argmax(axis=1)
        tr, dy, dx = np.unravel_index(best, (len(LEAK_TRANSFORMS), n_shift, n_shift))
        ncc[start : start + chunk] = score[np.arange(len(score)), best]
        shift[start : start + chunk] = np.stack([dy - s, dx - s], axis=1)
        transform[start : start + chunk] = tr
    return np.clip(ncc, -1.0, 1.0), shift, transform


def read_accepted_leaks(path: str | os.PathLike | None) -> dict[tuple[str, str, str], str]:
    """A reviewer's accepted leaks: ``{(split method, patch_id, train_patch_id): reason}``.

    The CSV has the columns :data:`ACCEPTED_COLUMNS` (``split``: the patch set, e.g.
    ``representative``; ``patch_id``: the test/validation patch; ``train_patch_id``; ``reason``:
    why the pair is not a leak, required). ``None`` or ``""``: none accepted.
    Raises ValueError naming the file and row of a missing column, empty field or repeated pair;
    FileNotFoundError if the file is missing.
    """
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file of accepted leaks not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ACCEPTED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {ACCEPTED_COLUMNS}")
    accepted = {}
    for line, row in enumerate(table.itertuples(index=False), start=2):
        empty = [c for c in ACCEPTED_COLUMNS if not str(getattr(row, c)).strip()]
        if empty:
            raise ValueError(f"{path}, line {line}: empty {empty} (every accepted leak needs its pair and a reason)")
        key = (row.split.strip(), row.patch_id.strip(), row.train_patch_id.strip())
        if key in accepted:
            raise ValueError(f"{path}, line {line}: pair {key} listed twice")
        accepted[key] = row.reason.strip()
    return accepted


def check_leaks(folder: Folder, threshold: float = LEAK_NCC, accepted: dict | None = None) -> Check:
    """Fail on every test or validation patch that shows the same particle as a training patch
    of another image (:func:`max_ncc` at least ``threshold`` after the :func:`candidate_pairs`
    pre-screen), unless ``accepted`` (:func:`read_accepted_leaks`) lists the pair: then it is a note
    with the reviewer's reason. Accepted pairs that are not found are noted too."""
    check = Check("leaks", f"Same particle in a training and a test/validation patch (max NCC >= {threshold:g})")
    dirs = _patch_dirs(folder, check)
    if not dirs:
        return check
    accepted = dict(accepted or {})
    used, covered = set(), []
    for pdir in dirs:
        method, where = pdir.name, f"results/patches/{pdir.name}"
        patches = _read(pdir / "patches.csv")
        arrays = _subset_arrays(pdir)
        tables = {s: patches[patches.subset == s].sort_values("index") for s in arrays}
        if "train" not in arrays or any(len(tables[s]) != len(arrays[s]) for s in arrays):
            covered.append(f"{method}: not compared (no training array, or arrays unlike the table)")
            continue
        (train_embedded, train), train_rows = _standardised(arrays["train"]), tables["train"]
        n_pairs = n_query = 0
        for subset in ("validation", "test"):
            if subset not in arrays or not len(arrays[subset]):
                continue
            (embedded, query), rows = _standardised(arrays[subset]), tables[subset]
            pairs = candidate_pairs(embedded, rows.image_id.to_numpy(), train_embedded, train_rows.image_id.to_numpy())
            n_query, n_pairs = n_query + len(query), n_pairs + len(pairs)
            ncc, shift, transform = max_ncc(query[pairs[:, 0]], train[pairs[:, 1]])
            for (q, t), score, (dy, dx), tr in zip(pairs, ncc, shift, transform):
                if score < threshold:
                    continue
                a, b = rows.iloc[q], train_rows.iloc[t]
                detail = (
                    f"{subset} {a.patch_id} (image {a.image_id}) ~ train {b.patch_id} (image {b.image_id}): NCC {score:.3f}"
                    f" (shift {LEAK_BIN * dx:+d}, {LEAK_BIN * dy:+d} nm, {'identity' if tr == 0 else 'transform ' + str(tr)})"
                )
                key = (method, a.patch_id, b.patch_id)
                if key in accepted:
                    used.add(key)
                    check.inform("accepted leak", where, f"{detail}; accepted: {accepted[key]}")
                else:
                    published = " in the published split" if method == "given" else ""
                    check.fail("leak" + published, where, detail)
        covered.append(
            f"{method}: {n_query} test/validation patches, {n_pairs} pairs with training patches of other images scored"
        )
    for key in sorted(set(accepted) - used):
        check.inform(
            "accepted pair not found",
            f"results/patches/{key[0]}",
            f"{key[1]} ~ {key[2]}: not a leak here (or not present)",
        )
    check.covered = "; ".join(covered)
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
    split, patches, table = (
        _read(folder.local(split_csv)),
        _read(folder.local(patches_csv)),
        pd.read_csv(folder.local(TABLE1)),
    )
    for row in table.itertuples():
        images = split if row[1] == "all" else split[split["class"] == row[1]]
        members = patches if row[1] == "all" else patches[patches["class"] == row[1]]
        if row.subset != "total":
            images, members = images[images["split"] == row.subset], members[members["subset"] == row.subset]
        want = {"images": len(images), "particles": int(images["n_particles"].sum()), "patches": len(members)}
        for column, value in want.items():
            if getattr(row, column) != value:
                check.fail(
                    "count differs",
                    TABLE1,
                    f"{row[1]} {row.subset} {column}: table {getattr(row, column)}, recounted {value}",
                )
    classes = set(split["class"]) | {"all"}
    if set(table["class"]) != classes:
        check.fail(
            "classes differ", TABLE1, f"table classes {sorted(set(table['class']) ^ classes)} differ from {split_csv}"
        )
    check.covered = f"{len(table)} rows of {TABLE1} recounted from {split_csv} and {patches_csv}"
    return check


# --- the audit ------------------------------------------------------------------------------


def audit(
    results_dir: str | os.PathLike,
    max_hamming: int = NEAR_HAMMING,
    leak_ncc: float = LEAK_NCC,
    accepted_leaks: str | os.PathLike | None = None,
) -> AuditResult:
    """Run every check on a results folder (see the module docstring); ``accepted_leaks``: a CSV
    of reviewed pairs (:func:`read_accepted_leaks`)."""
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
    return AuditResult(str(results_dir), checks, lineage_summary(records), time.perf_counter() - started)


# --- the report -------------------------------------------------------------------------------


def _blocks(result: AuditResult) -> list[tuple]:
    """The report as blocks (``h``, ``p``, ``table``), rendered to Markdown and HTML."""
    verdict = "PASSED" if result.passed else "FAILED"
    lin = result.lineage
    blocks = [
        ("h", 1, f"Audit of {result.results_dir}: {verdict}"),
        (
            "p",
            f"Audited {result.date}. {lin['jobs']} job records; audit took {result.seconds:.1f} s. Records digest (sha256 over every record file): `{lin['records_sha256']}`.",
        ),
        (
            "table",
            ["check", "status", "covered", "findings", "notes"],
            [
                [c.title, c.status, c.skipped or c.covered, str(len(c.findings)), str(len(c.notes))]
                for c in result.checks
            ],
        ),
        ("h", 2, "Findings"),
    ]
    findings = [[c.name, f["kind"], f["path"], f["detail"]] for c in result.checks for f in c.findings]
    blocks.append(("table", ["check", "kind", "file", "detail"], findings) if findings else ("p", "None."))
    notes = [[c.name, n["kind"], n["path"], n["detail"]] for c in result.checks for n in c.notes]
    if notes:
        blocks += [("h", 2, "Notes (not failures)"), ("table", ["check", "kind", "file", "detail"], notes)]
    blocks += [
        ("h", 2, "Who made these results"),
        ("table", ["rule", "jobs"], [[k, str(v)] for k, v in lin["rules"].items()]),
        (
            "table",
            ["git commit", "dirty", "code sha256", "files"],
            [
                [
                    str(c.get("git_commit")),
                    str(c.get("git_dirty")),
                    str(c.get("code_sha256")),
                    str(c.get("n_code_files")),
                ]
                for c in lin["code"]
                if c
            ],
        ),
        (
            "table",
            ["package", "versions"],
            [
                [k, ", ".join(sorted({str(p.get(k)) for p in lin["packages"] if p}))]
                for k in sorted({k for p in lin["packages"] if p for k in p})
            ],
        ),
        (
            "p",
            f"Python {', '.join(lin['python'])}; hosts {', '.join(lin['hosts'])}; GPUs {json.dumps(lin['gpus']) if lin['gpus'] else 'none used'}; "
            f"jobs ran from {lin['first_start']} to {lin['last_end']}.",
        ),
        (
            "table",
            ["seed", "values"],
            [
                [k, ", ".join(sorted({str(s[k]) for s in lin["seeds"] if k in s}))]
                for k in sorted({k for s in lin["seeds"] for k in s})
            ],
        ),
    ]
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
            out.append(
                "\n".join(
                    [
                        "| " + " | ".join(map(_md_cell, row)) + " |"
                        for row in [block[1], ["---"] * len(block[1]), *block[2]]
                    ]
                )
            )
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
    """``temvirus audit RESULTS_DIR [--out DIR] [--near-bits N] [--leak-ncc X] [--accepted-leaks CSV]``
    (arguments in :mod:`temvirus.cli`):
    print the summary, write the report; exit status 1 on any finding."""
    result = audit(
        args.results_dir,
        max_hamming=NEAR_HAMMING if args.near_bits is None else args.near_bits,
        leak_ncc=LEAK_NCC if args.leak_ncc is None else args.leak_ncc,
        accepted_leaks=args.accepted_leaks,
    )
    out = Path(args.out) if args.out else Path(args.results_dir) / "audit"
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
) -> AuditResult:
    """Rule ``audit``: :func:`audit` ``results_dir`` and write the report (:func:`write_report`).

    ``max_hamming``, ``leak_ncc`` and ``accepted_leaks`` are :func:`audit`'s. On any finding
    raises :class:`AuditFailed` with the summary and writes nothing (the summary is in the
    log then, since Snakemake removes the failed job's outputs).
    """
    result = audit(results_dir, max_hamming=max_hamming, leak_ncc=leak_ncc, accepted_leaks=accepted_leaks)
    log.info("%s", summary(result))
    if not result.passed:
        raise AuditFailed(f"{results_dir}: audit failed:\n{summary(result)}")
    write_report(result, report_md, report_html, report_json)
    return result
