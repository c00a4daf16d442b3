"""The workflow without a development install: a job graph without torch, an installed package.

- ``snakemake -n`` with config/paper.yaml builds the whole job graph in a process where any
  import of torch or torchvision fails (a login node without the 4.8 GB torch stack), and
  without the package installed (the Snakefile puts the workflow's own ``src/`` on the path).
- ``pip install .`` (not editable) into a folder gives a package that finds the paper's tables
  as package data (importlib.resources), away from the checkout, and a ``temvirus --version``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from conftest import REPO, snakemake_cmd

import temvirus

#: run as ``python -c``: snakemake's command line, in a process that refuses torch/torchvision
#: and reports every attempt to import them
NO_TORCH = """
import atexit, sys
tried = []
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            tried.append(name)
            raise ImportError(f"{name} is not installed here (test)")
sys.meta_path.insert(0, Refuse())
atexit.register(lambda: print("TORCH IMPORTS TRIED:", sorted(set(tried)), file=sys.stderr))
from snakemake.cli import main
sys.argv = ["snakemake", *sys.argv[1:]]
main()
"""


def _env_without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.slow
def test_paper_job_graph_builds_without_torch(tmp_path):
    cmd = snakemake_cmd(tmp_path, "-n", "--configfile", "config/paper.yaml")
    cmd = [sys.executable, "-c", NO_TORCH, *cmd[1:]]
    done = subprocess.run(cmd, cwd=tmp_path, env=_env_without_pythonpath(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "TORCH IMPORTS TRIED: []" in done.stderr, done.stderr[-3000:]
    # the paper's 15 experiments, the ImageNet weights of its 8 transfer models among the jobs
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", done.stdout, re.MULTILINE))
    assert counts["train_model"] == "15" and counts["download_weights_file"] == "8", counts


@pytest.mark.slow
def test_installed_package_reads_its_data_and_version(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "src", source / "src", symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    shutil.copytree(REPO / "resources" / "paper", source / "resources" / "paper")
    target = tmp_path / "site"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
        str(source),
    ]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.rmtree(source)  # the installed package must not need its source

    probe = (
        "import temvirus, temvirus.classes as c; "
        "p = c.paper_file('table1_dataset.csv'); "
        "print(temvirus.__file__); print(p); print(p.is_symlink()); print(len(c.load_table1(p)))"
    )
    env = {**_env_without_pythonpath(), "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    module, table1, is_link, rows = done.stdout.split()
    assert module.startswith(str(target)) and table1.startswith(str(target)), done.stdout
    assert is_link == "False" and rows == "22", done.stdout
    assert sorted(p.name for p in (target / "temvirus" / "paper").iterdir()) == sorted(
        p.name for p in (REPO / "resources" / "paper").glob("*.csv")
    )

    version = subprocess.run(
        [str(target / "bin" / "temvirus"), "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"temvirus {temvirus.__version__}"
    assert (target / f"temvirus-{temvirus.__version__}.dist-info").is_dir()


def test_version_has_one_source():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "temvirus.__version__"}
    done = subprocess.run(
        [sys.executable, "-m", "temvirus.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == f"temvirus {temvirus.__version__}", done.stdout + done.stderr
