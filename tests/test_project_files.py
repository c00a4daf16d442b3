"""The files a workflow user looks for: licence, citation, configuration guide, catalog entry."""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import REPO

import temvirus

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: config sections whose value is a mapping given as one key (per-initialisation values)
ONE_KEY = {"training.epochs", "training.patience", "training.lr", "micrographs.diameters_nm"}


def config_keys(config: dict, prefix: str = "") -> set[str]:
    """Dotted keys of a config, down to the values (lists, per-init mappings and per-class diameters are one key)."""
    keys = set()
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in ONE_KEY:
            keys |= config_keys(value, key + ".")
        else:
            keys.add(key)
    return keys


def test_license_is_the_mit_licence_pyproject_names():
    text = (REPO / "LICENSE").read_text()
    assert PYPROJECT["license"] == "MIT"
    assert text.startswith("MIT License") and "Copyright (c)" in text and "The temvirus authors" in text
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def test_citation_cites_the_workflow_the_paper_and_the_dataset():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == temvirus.__version__ and cff["license"] == PYPROJECT["license"]
    refs = {ref["type"]: ref for ref in cff["references"]}
    assert refs["article"]["doi"] == "10.1016/j.cmpb.2021.106318"
    assert refs["article"]["year"] == 2021 and refs["article"]["volume"] == 209
    assert refs["dataset"]["doi"] == "10.17632/x4dwwfwtw3.3"
    # the dataset the workflow downloads is the one cited
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["dataset"]["mendeley"]
    assert refs["dataset"]["doi"] == f"10.17632/{default['id']}.{default['version']}"


def test_config_readme_documents_every_key_and_no_other():
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", (REPO / "config" / "README.md").read_text(), re.MULTILINE))
    keys = set()
    for name in ("config.yaml", "paper.yaml"):
        keys |= config_keys(yaml.safe_load((REPO / "config" / name).read_text()))
    assert not keys - documented, f"config keys missing from config/README.md: {sorted(keys - documented)}"
    assert not documented - keys, f"config/README.md documents keys no config has: {sorted(documented - keys)}"


def _flat_values(config: dict, prefix: str = "") -> dict:
    """Dotted key -> value of a config (the keys of :func:`config_keys`)."""
    values = {}
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in ONE_KEY:
            values.update(_flat_values(value, key + "."))
        else:
            values[key] = value
    return values


def test_config_readme_defaults_are_the_configs_values():
    """Every default (and paper) cell of config/README.md written as one `literal` is the value
    config/config.yaml (config/paper.yaml over it) holds; an empty paper cell is the default's."""
    default = _flat_values(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    paper = {**default, **_flat_values(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))}
    checked, wrong = 0, []
    for line in (REPO / "config" / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        key = re.fullmatch(r"`([a-z_.]+)`", cells[1]) if len(cells) > 4 else None
        if not key:
            continue
        key = key.group(1)
        for column, cell, values in (("default", cells[2], default), ("paper", cells[3], paper)):
            literal = re.fullmatch(r"`([^`]*)`", cell)
            if literal:
                checked += 1
                if yaml.safe_load(literal.group(1)) != values[key]:
                    wrong.append(f"{key} ({column}): README {literal.group(1)}, config {values[key]!r}")
    assert checked > 80 and not wrong, wrong


def test_workflow_catalog_entry():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert catalog["software-stack-deployment"]["conda"] is True
    assert catalog["report"] is True
    assert (REPO / "workflow" / "report" / "workflow.rst").is_file()  # the report's front page
    assert (REPO / "config" / "README.md").is_file()
