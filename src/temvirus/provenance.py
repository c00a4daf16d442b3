"""Lineage records: one JSON file per Snakemake job, written by :func:`temvirus.smk.run_rule`.

After a job's function has returned, :func:`write_record` writes
``results/provenance/{rule}/{wildcards}.json`` (atomically) with the sha256 and size of every
output (every file inside a directory output), the path and sha256 of every input, the rule,
wildcards, params, config and seeds, the code version (git commit, dirty flag, hash of the
package and workflow files), Python and package versions, host, GPU (when the job used one),
and start/end times. One file per job, not a shared JSON-lines log: parallel jobs never
write to the same file, a re-run job replaces its own record, and a reader sees a record
whole or not at all.

Hashing: a file whose path, size and mtime equal those in an existing record is not read
again; its recorded sha256 is reused. So the raw data is hashed once, by the job that makes
(or first reads) it, and never again by the jobs downstream. The audit
(:mod:`temvirus.audit`) never trusts this shortcut: it re-reads every byte.

Steps can add facts of their own while they run: :func:`report_seed` (a derived seed),
:func:`note` (anything JSON-serialisable, e.g. the download record of a download job).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from temvirus.io import sha256_file, write_json

#: where the records live, relative to the workflow's working directory
PROVENANCE_DIR = Path("results/provenance")
#: version of the record layout below (bump when a key changes meaning)
RECORD_SCHEMA = 1
#: files Snakemake itself writes into directory outputs after the job (never recorded)
SNAKEMAKE_MARKERS = frozenset({".snakemake_timestamp"})
#: packages whose versions go into every record
PACKAGES = (
    "temvirus",
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "tifffile",
    "pillow",
    "matplotlib",
    "snakemake",
)
#: the repository checkout this package runs from (src/temvirus/ -> repo root)
REPO = Path(__file__).resolve().parents[2]
#: what "the code" is: the package, the workflow and the environment files
CODE_GLOBS = ("src/temvirus/**/*.py", "workflow/**/*", "Snakefile", "envs/*.yaml", "pyproject.toml")

_notes: dict[str, object] = {}
_seeds: dict[str, int] = {}


def report_seed(name: str, seed: int) -> None:
    """Record a seed derived during the current job (e.g. the torch seed of a training run)."""
    _seeds[str(name)] = int(seed)


def note(key: str, value) -> None:
    """Add a JSON-serialisable fact to the current job's record under ``notes[key]``."""
    _notes[str(key)] = _jsonable(value)


def reset() -> None:
    """Forget the seeds and notes reported so far (called at the start of each job)."""
    _notes.clear()
    _seeds.clear()


def config_differences(recorded: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    """The dotted keys (``training.epochs``) whose values differ between two configs as JSON holds them
    (``current`` is taken through JSON first: tuples, non-string keys), nested mappings compared key by key, a
    key in one only differing; in sorted order."""
    current = json.loads(json.dumps(_jsonable(current))) if not prefix else current
    keys = []
    for key in sorted({*recorded, *current}, key=str):
        name, old, new = f"{prefix}{key}", recorded.get(key), current.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            keys += config_differences(old, new, f"{name}.")
        elif json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True) or (key in recorded) != (
            key in current
        ):
            keys.append(name)
    return keys


def params_drift(rule: str, current: Mapping, root: str | os.PathLike = PROVENANCE_DIR) -> list[str]:
    """The keys of ``current`` (the params a job of ``rule`` without wildcards would get now) that differ from
    those its record holds (:func:`config_differences`), or ``[]`` without a record. For ``report_summary``,
    the run's last job, whose params are the settings the front page and the report's captions show: when
    they differ, the results and a report built now describe different runs (and the job will run again)."""
    path = record_path(rule, {}, root)
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return config_differences(recorded, current) if isinstance(recorded, Mapping) else []


def record_path(rule: str, wildcards: Mapping[str, object], root: str | os.PathLike = PROVENANCE_DIR) -> Path:
    """``{root}/{rule}/{k=v__k=v}.json`` (``job.json`` for a rule without wildcards)."""
    slug = "__".join(f"{k}={v}" for k, v in wildcards.items()) or "job"
    return Path(root) / rule / (re.sub(r"[^A-Za-z0-9_.=+-]", "_", slug) + ".json")


# --- hashing ---------------------------------------------------------------------------


def is_marker(path: Path) -> bool:
    """Whether ``path`` is a marker file Snakemake leaves in a directory output: named as one of
    :data:`SNAKEMAKE_MARKERS` and empty (a file of that name with content is data, traced as any)."""
    return path.name in SNAKEMAKE_MARKERS and path.stat().st_size == 0


def iter_tree(path: str | os.PathLike) -> list[Path]:
    """Every regular file below a directory, sorted, without Snakemake's marker files (:func:`is_marker`)."""
    return sorted(p for p in Path(path).rglob("*") if p.is_file() and not is_marker(p))


def tree_sha256(files: Iterable[tuple[str, str]]) -> str:
    """One hash for a directory: sha256 of its sorted ``relative-path<TAB>sha256`` lines."""
    lines = "".join(f"{rel}\t{digest}\n" for rel, digest in sorted(files))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


class HashCache:
    """sha256 of files, reusing a recorded hash when path, size and mtime are unchanged."""

    def __init__(self, known: Mapping[str, tuple[int, int, str]] | None = None):
        self.known = dict(known or {})

    @classmethod
    def from_records(cls, root: str | os.PathLike = PROVENANCE_DIR) -> HashCache:
        """A cache seeded with every file entry of the records under ``root``."""
        known = {}
        for record in read_records(root)[0].values():
            for entry in record.get("outputs", []) + record.get("inputs", []):
                for item in entry.get("files", [entry]):
                    if {"path", "size", "mtime_ns", "sha256"} <= item.keys():
                        known[item["path"]] = (item["size"], item["mtime_ns"], item["sha256"])
        return cls(known)

    def file_entry(self, path: str | os.PathLike) -> dict:
        """``{path, sha256, size, mtime_ns}`` of one file."""
        key = os.path.normpath(path)
        stat = os.stat(key)
        size, mtime = stat.st_size, stat.st_mtime_ns
        hit = self.known.get(key)
        digest = hit[2] if hit and hit[:2] == (size, mtime) else sha256_file(key)
        self.known[key] = (size, mtime, digest)
        return {"path": key, "sha256": digest, "size": size, "mtime_ns": mtime}

    def entry(self, path: str | os.PathLike, name: str | None = None) -> dict:
        """Record entry of a file or a directory (a directory lists every file inside)."""
        key = os.path.normpath(path)
        if os.path.isdir(key):
            files = [self.file_entry(p) for p in iter_tree(key)]
            entry = {
                "path": key,
                "type": "directory",
                "sha256": tree_sha256((os.path.relpath(f["path"], key), f["sha256"]) for f in files),
                "size": sum(f["size"] for f in files),
                "n_files": len(files),
                "files": files,
            }
        elif os.path.isfile(key):
            entry = {"type": "file", **self.file_entry(key)}
        else:
            raise FileNotFoundError(f"{key}: declared file does not exist, cannot record it")
        return {"name": name, **entry}


# --- facts about the job's surroundings ------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_files(repo: str | os.PathLike = REPO) -> list[Path]:
    """The files that make up the code version (see :data:`CODE_GLOBS`), sorted."""
    repo = Path(repo)
    found = {p for pattern in CODE_GLOBS for p in repo.glob(pattern) if p.is_file()}
    return sorted(p for p in found if "__pycache__" not in p.parts)


def code_version() -> dict:
    """Git commit and dirty flag of the checkout, and a hash of the code files' contents.

    ``code_sha256`` pins the exact code even in a dirty checkout or outside git.
    """
    files = code_files()
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if dirty is None else bool(dirty),
        "code_sha256": tree_sha256((p.relative_to(REPO).as_posix(), sha256_file(p)) for p in files),
        "n_code_files": len(files),
    }


def environment() -> dict:
    """Python, package versions (``None``: not installed), host, platform and CPU (:func:`cpu`)."""
    from temvirus import __version__

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    # the code that runs, wherever it was imported from (an install, or the workflow's src/,
    # where a stale egg-info of an editable install may sit); its files' hash is in "code"
    packages["temvirus"] = __version__
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "packages": packages,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu(),
    }


#: environment variables that cap the instruction set of oneDNN's and ATen's CPU kernels
CPU_ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def cpu_model() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what :mod:`platform` knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu() -> dict:
    """The CPU model and the instruction set torch's CPU kernels use.

    Floating-point results of CPU training depend on it: oneDNN and ATen choose their kernels
    (and so the order of their sums) by the instruction set, so the same config and seed give
    the same weights on the same instruction set only (docs/lineage.md, "What it cannot
    prove"). ``capability`` is ``torch.backends.cpu.get_cpu_capability()`` (``None`` when the
    job did not import torch); ``variables`` the set ones of :data:`CPU_ISA_VARIABLES`.
    """
    torch = sys.modules.get("torch")
    return {
        "model": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability() if torch is not None else None,
        "variables": {name: os.environ[name] for name in CPU_ISA_VARIABLES if name in os.environ},
    }


def gpu() -> dict | None:
    """GPU model and driver, when this job initialised CUDA through torch (else ``None``)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    driver = None
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        driver = proc.stdout.split("\n")[0].strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "driver": driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def find_seeds(tree, prefix: str) -> dict[str, int]:
    """Every key named ``seed`` or ``*_seed`` in a nested mapping, by dotted path."""
    found = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            path = f"{prefix}.{key}"
            if (key == "seed" or str(key).endswith("_seed")) and isinstance(value, int):
                found[path] = value
            else:
                found.update(find_seeds(value, path))
    return found


def download_records(outputs: Iterable[str]) -> dict[str, object]:
    """The download records among or beside a job's outputs, by path.

    The download stage writes its record as an output named ``*record.json`` or as a
    ``{file}.record.json`` sidecar of a downloaded file; either is embedded in the job's record.
    """
    found = {}
    for out in outputs:
        for candidate in (Path(out), Path(f"{out}.record.json")):
            if candidate.name.endswith("record.json") and candidate.is_file():
                try:
                    found[str(candidate)] = json.loads(candidate.read_text(encoding="utf-8"))
                except ValueError as exc:
                    raise ValueError(f"{candidate}: download record is not JSON: {exc}") from exc
    return found


def _named(items: Iterable[tuple[str, object]]) -> dict[str, str]:
    """Path -> name for a Snakemake Namedlist's named entries (a name may hold a list)."""
    names = {}
    for name, value in items:
        for path in [value] if isinstance(value, str) else list(value):
            names.setdefault(os.path.normpath(str(path)), name)
    return names


# --- the record ------------------------------------------------------------------------


def build_record(smk, started: dt.datetime, ended: dt.datetime, cache: HashCache | None = None) -> dict:
    """The lineage record of a finished Snakemake job (``smk`` is the script's object)."""
    cache = cache or HashCache.from_records()
    in_names, out_names = _named(smk.input.items()), _named(smk.output.items())
    params = _jsonable(dict(smk.params.items()))
    config = _jsonable(dict(smk.config))
    return {
        "schema": RECORD_SCHEMA,
        "rule": smk.rule,
        "wildcards": {k: str(v) for k, v in smk.wildcards.items()},
        "started": started.isoformat(timespec="seconds"),
        "ended": ended.isoformat(timespec="seconds"),
        "seconds": round((ended - started).total_seconds(), 3),
        "threads": smk.threads,
        "outputs": [cache.entry(p, out_names.get(os.path.normpath(p))) for p in smk.output],
        "inputs": [cache.entry(p, in_names.get(os.path.normpath(p))) for p in smk.input],
        "logs": [str(p) for p in smk.log],
        "params": params,
        "config": config,
        "seeds": {
            **find_seeds(config, "config"),
            **find_seeds(params, "params"),
            **{f"derived.{k}": v for k, v in _seeds.items()},
        },
        "notes": dict(_notes),
        "download": download_records(smk.output),
        "code": code_version(),
        "environment": environment(),
        "gpu": gpu(),
    }


def write_record(smk, started: dt.datetime, ended: dt.datetime, root: str | os.PathLike = PROVENANCE_DIR) -> Path:
    """Build the job's record and write it atomically; returns its path."""
    path = record_path(smk.rule, dict(smk.wildcards.items()), root)
    write_json(path, build_record(smk, started, ended, HashCache.from_records(root)))
    return path


def _entry_problem(entry) -> str | None:
    """What is wrong with an ``inputs``/``outputs`` entry as :meth:`HashCache.entry` writes it
    (``None``: nothing). Paths may be absolute or lead out of the workflow's folder: a local
    dataset or a ``weights.dir`` elsewhere is recorded so."""
    if not isinstance(entry, dict):
        return "not an object"
    if entry.get("type") not in ("file", "directory"):
        return f"'type' {entry.get('type')!r} is neither 'file' nor 'directory'"
    files = entry.get("files") if entry["type"] == "directory" else []
    if not isinstance(files, list):
        return "'files' of a directory is not a list"
    for item in [entry, *files]:
        if not isinstance(item, dict):
            return "an item of 'files' is not an object"
        path = item.get("path")
        if not isinstance(path, str) or not path:
            return f"'path' {path!r} is not a path"
        if not isinstance(item.get("sha256"), str) or type(item.get("size")) is not int:
            return f"{path}: 'sha256' is not a string or 'size' not an integer"
    return None


def record_problem(record) -> str | None:
    """What makes a parsed lineage record unlike what :func:`build_record` writes, as far as the
    audit reads it (``None``: nothing): a string ``rule``, ``started`` and ``ended``, an object
    ``environment`` if any, and ``inputs`` and ``outputs`` lists of file or directory entries
    (``path``, ``sha256``, ``size``; a directory's ``files``)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for key in ("rule", "started", "ended"):
        if not isinstance(record.get(key), str):
            return f"'{key}' is missing or not a string"
    if not isinstance(record.get("environment", {}), dict):
        return "'environment' is not an object"
    for key in ("outputs", "inputs"):
        entries = record.get(key)
        if not isinstance(entries, list):
            return f"'{key}' is missing or not a list"
        for i, entry in enumerate(entries):
            problem = _entry_problem(entry)
            if problem:
                return f"{key}[{i}]: {problem}"
    return None


def read_records(root: str | os.PathLike = PROVENANCE_DIR) -> tuple[dict[Path, dict], dict[Path, str]]:
    """Every record under ``root`` by path, and the unreadable ones (path -> what is wrong): not
    JSON, or not of a record's shape (:func:`record_problem`). Records are what the audit
    reads from a folder it cannot trust, so nothing in one raises.

    Hidden files (an atomic write in progress) are skipped.
    """
    records, unreadable = {}, {}
    for path in sorted(Path(root).glob("*/*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            unreadable[path] = f"not JSON: {exc}"
            continue
        problem = record_problem(record)
        if problem:
            unreadable[path] = f"not a lineage record: {problem}"
            continue
        records[path] = record
    return records, unreadable


def load_records(root: str | os.PathLike = PROVENANCE_DIR) -> dict[Path, dict]:
    """Every record under ``root`` by path (:func:`read_records`); a malformed record raises a
    ValueError naming it."""
    records, unreadable = read_records(root)
    if unreadable:
        path, why = next(iter(unreadable.items()))
        raise ValueError(f"{path}: unreadable lineage record: {why}")
    return records
