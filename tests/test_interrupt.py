"""Jobs killed outright (issue 12, case 3): the rerun ends as an uninterrupted run, and the audit passes.

A job stopped by SIGTERM or SIGKILL (scancel, a time limit, the out-of-memory killer) cannot
remove the temporaries of its atomic writes (temvirus.io); the workflow removes them when it
starts. Each kill here is real: the job's processes get the signal while a temporary exists.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import snakemake_cmd

from temvirus.io import TEMPORARY, sha256_file

TARGET = "results/patches/given/patches.csv"
CONFIG = {"dataset": {"synthetic": {"scale": 0.001, "overlaps": 1, "real_examples": ""}}}


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMPORARY.match(p.name)] if folder.exists() else []


def _results(workdir: Path) -> dict[str, str]:
    """sha256 of every result file but the lineage records (which hold times and hosts) and the
    training jobs' resume state (no output: it holds seconds and the trainer's pid)."""
    results = workdir / "results"
    return {
        p.relative_to(results).as_posix(): sha256_file(p)
        for p in sorted(results.rglob("*"))
        if p.is_file()
        and p.relative_to(results).parts[0] != "provenance"
        and "resume" not in p.relative_to(results).parts[:-1]
    }


def _audit(workdir: Path) -> subprocess.CompletedProcess:
    temvirus = str(Path(sys.executable).with_name("temvirus"))
    return subprocess.run(
        [temvirus, "audit", str(workdir / "results"), "--out", str(workdir / "audit"), "--partial"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_killed_job_then_rerun_gives_the_same_results_and_a_passing_audit(tmp_path):
    workdir = tmp_path / "wd"
    override = tmp_path / "override.json"
    override.write_text(json.dumps(CONFIG))
    cmd = snakemake_cmd(workdir, TARGET, "--configfile", str(override))
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    reference = _results(workdir)
    assert _audit(workdir).returncode == 0
    patches = workdir / "results/patches/given"
    for sig in (signal.SIGTERM, signal.SIGKILL):
        run = subprocess.Popen(
            [*cmd, "--forcerun", "extract_patches"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 300
        while not _temporaries(patches) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        left = _temporaries(patches)
        assert left, "extract_patches finished before a temporary was seen"
        for pid in _descendants(run.pid):  # the job, not the workflow's main process
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        _, err = run.communicate(timeout=120)
        assert run.returncode != 0, err[-2000:]
        assert any(p.exists() for p in left), f"{sig.name}: the killed job left no temporary to clean up"
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "temporary of an interrupted job" in rerun.stderr and "extract_patches" in rerun.stderr
        assert _temporaries(workdir / "results") == []
        assert _results(workdir) == reference, sig.name
        audit = _audit(workdir)
        assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-2000:]
