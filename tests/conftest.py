"""Shared fixtures. Real data lives outside the repo in ../shared (CI has it there)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_CROPS = SHARED / "real-tem" / "tem-virus-1nm-crops"
PAPER = REPO / "resources" / "paper"


@pytest.fixture(scope="session")
def real_crops() -> Path:
    """The 578 real 1 nm/px crops (9 classes); the test is skipped, saying why, when absent."""
    if not REAL_CROPS.is_dir():
        pytest.skip(f"real TEM crops not found at {REAL_CROPS} (they are read from ../shared, never committed)")
    return REAL_CROPS


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """Command line running this repo's workflow with ``workdir`` as its working directory.

    The workdir gets links to the repo's ``config/`` and ``resources/`` so that runs in a
    temporary folder read the same configuration and never touch the repo's ``results/``.
    """
    import sys

    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("config", "resources"):
        link = workdir / name
        if not link.exists():
            link.symlink_to(REPO / name, target_is_directory=True)
    snakemake = Path(sys.executable).with_name("snakemake")
    return [str(snakemake), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """One real run of the default workflow (config/config.yaml) in a scratch workdir.

    Session-scoped: every test that only reads the default results shares this run. Tests
    that modify results must copy them first.
    """
    import subprocess

    workdir = tmp_path_factory.mktemp("default_run")
    proc = subprocess.run(snakemake_cmd(workdir), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"default workflow failed:\n{proc.stderr[-6000:]}"
    return workdir
