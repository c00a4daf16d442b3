"""The conda environments of the rules (envs/*.yaml) agree with the pip install (pyproject.toml).

conda itself is not needed: the files are parsed. Every rule that runs code names an env
file that exists under envs/; every env pins exactly pyproject.toml's versions, and holds
every runtime dependency except the workflow engine (Snakemake and its executor plugin,
which run the jobs and are not imported by the rules' code).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake_cmd
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import temvirus
from temvirus import provenance

ENVS = sorted((REPO / "envs").glob("*.yaml"))
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "Snakefile"]
#: packages of the Snakemake process only (the config checks run while it parses), not of the jobs
ENGINE = {"snakemake", "snakemake-executor-plugin-slurm", "jsonschema"}
RULE_HEADER = re.compile(r"^(?:local)?rule (\w+):", re.MULTILINE)
DIRECTIVE = re.compile(r"^    (\w+):", re.MULTILINE)


def pyproject_pins() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def env_pip_lines(env: Path) -> list[str]:
    """The pip section of a conda env file."""
    deps = yaml.safe_load(env.read_text())["dependencies"]
    return next((d["pip"] for d in deps if isinstance(d, dict) and "pip" in d), [])


def env_pip_pins(env: Path) -> dict[str, Requirement]:
    """The pip section of a conda env file as requirements (every line must be one)."""
    reqs = [Requirement(r) for r in env_pip_lines(env)]
    return {canonicalize_name(r.name): r for r in reqs}


def rules() -> list[tuple[Path, str, str]]:
    """(rule file, rule name, rule body) for every rule of the workflow (snakefmt layout)."""
    found = []
    for path in RULE_FILES:
        text = path.read_text()
        headers = list(RULE_HEADER.finditer(text))
        for head, nxt in zip(headers, headers[1:] + [None]):
            body = text[head.end() : nxt.start() if nxt else len(text)]
            body = re.split(r"^\S", body, maxsplit=1, flags=re.MULTILINE)[0]  # up to the next top-level statement
            found.append((path, head.group(1), body))
    return found


def test_there_are_envs_and_rules():
    assert ENVS, "no envs/*.yaml"
    assert len(rules()) > 2


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_pins_equal_pyproject(env):
    pins = pyproject_pins()
    env_pins = env_pip_pins(env)
    for name, req in env_pins.items():
        assert name in pins, f"{env.name}: {req} is not a dependency in pyproject.toml"
        assert req.specifier == pins[name].specifier, f"{env.name}: {req} but pyproject.toml has {pins[name]}"
    missing = set(pins) - ENGINE - set(env_pins)
    assert not missing, f"{env.name} lacks pyproject.toml dependencies {sorted(missing)}"


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_python_satisfies_requires_python(env):
    requires = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    deps = yaml.safe_load(env.read_text())["dependencies"]
    pythons = [d.split("=", 1)[1] for d in deps if isinstance(d, str) and re.match(r"python\s*=", d)]
    assert len(pythons) == 1, f"{env.name}: expected one python=X.Y pin, got {pythons}"
    assert requires.contains(pythons[0] + ".0"), f"{env.name}: python {pythons[0]} not in requires-python {requires}"
    conda_names = {re.split(r"[=<>!~ ]", d, maxsplit=1)[0] for d in deps if isinstance(d, str)}
    assert not conda_names & set(pyproject_pins()), (
        f"{env.name}: pinned both by conda and pip: {conda_names & set(pyproject_pins())}"
    )


def test_every_rule_running_code_has_an_existing_env():
    for path, name, body in rules():
        directives = set(DIRECTIVE.findall(body))
        if not directives & {"script", "shell", "run", "notebook", "wrapper"}:
            continue  # an aggregate rule (inputs only): nothing runs
        assert "conda" in directives, f"rule {name} ({path.name}) runs code but has no conda: env"
        env = re.search(r"^    conda:\s*\n\s+\"([^\"]+)\"", body, re.MULTILINE)
        assert env, f"rule {name} ({path.name}): conda: is not a plain path"
        resolved = (path.parent / env.group(1)).resolve()
        assert resolved.is_file(), f"rule {name} ({path.name}): env file {resolved} does not exist"
        assert resolved in ENVS, f"rule {name} ({path.name}): env {resolved} is not one of envs/*.yaml"


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_names_only_registry_packages(env):
    """No path, URL or editable install: Snakemake creates the env from a copy under .snakemake/conda/."""
    for line in env_pip_lines(env):
        assert not line.startswith("-") and "/" not in line and "@" not in line, (
            f"{env.name}: {line!r} is not a registry package"
        )
        assert canonicalize_name(Requirement(line).name) != "temvirus", (
            f"{env.name}: the project itself comes from src/, not the env"
        )


#: not installed by the env test: torch and torchvision (4.8 GB of CUDA wheels, minutes to fetch)
#: and timm, which requires both; the rule it runs imports none of them, and their pins are
#: checked against pyproject.toml above
HEAVY = {"torch", "torchvision", "timm"}


@pytest.mark.slow
def test_env_from_snakemakes_copy_runs_a_rule_without_the_package_installed(tmp_path):
    """The env's pip packages, read from a copy of the env file where Snakemake keeps it, in a
    fresh virtual environment (no project package) run a rule of the workflow."""
    env_file = REPO / "envs" / "temvirus.yaml"
    copy = tmp_path / "work" / ".snakemake" / "conda" / "0123abcd_.yaml"  # where Snakemake copies env files
    copy.parent.mkdir(parents=True)
    copy.write_text(env_file.read_text())
    lines = [line for line in env_pip_lines(copy) if canonicalize_name(Requirement(line).name) not in HEAVY]
    engine = [str(pyproject_pins()["snakemake"])]  # outside the env under --sdm conda; here it runs the job
    (tmp_path / "requirements.txt").write_text("\n".join(lines + engine) + "\n")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(tmp_path / "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=copy.parent,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    absent = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import temvirus"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert absent.returncode != 0, "the fresh environment must not hold the project package"

    work = copy.parents[2]
    (work / "small.yaml").write_text("dataset:\n  synthetic:\n    scale: 0.005\n    overlaps: 1\n")
    cmd = snakemake_cmd(work, "results/raw/images.csv", "--configfile", "small.yaml")
    cmd[0] = str(venv / "bin" / "snakemake")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=work)
    assert done.returncode == 0, done.stderr[-4000:]
    images = (work / "results" / "raw" / "images.csv").read_text().splitlines()
    assert len(images) > 22, images[:3]
    record = json.loads((work / "results" / "provenance" / "raw_tables" / "job.json").read_text())
    assert record["environment"]["executable"].startswith(str(venv)), record["environment"]
    # the job ran the workflow's own src/ (the fresh environment has no temvirus)
    assert record["code"]["code_sha256"] == provenance.code_version()["code_sha256"]
    assert record["environment"]["packages"]["temvirus"] == temvirus.__version__
