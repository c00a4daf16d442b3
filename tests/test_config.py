"""The configuration: bad values refused before any job, naming the key (temvirus.configcheck,
workflow/schemas/config.schema.yaml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake_cmd

from temvirus.configcheck import config_problems, integer_problems, key_path

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _dry_run(tmp_path: Path, overlay: dict, *args: str) -> subprocess.CompletedProcess:
    """A dry run of the default workflow with ``overlay`` on top of config/config.yaml."""
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    cmd = snakemake_cmd(
        tmp_path / "work", "-n", *args, "--configfile", str(REPO / "config" / "config.yaml"), str(path), ci=False
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


MICRO_OFF = {"micrographs": {"experiments": []}}

#: overlay -> what the refusal says (each a value that used to pass the parse and fail in a job,
#: or be silently ignored)
REFUSED = {
    "float_epochs": (
        {"training": {"epochs": {"scratch": 30.0, "imagenet": 4}}},
        ["training.epochs.scratch: 30.0 is a float where a whole number is needed; write 30"],
    ),
    "float_seed": ({"seed": 42.0}, ["seed: 42.0 is a float where a whole number is needed; write 42"]),
    "float_in_experiment": (
        {"experiments": [{"model": "small_cnn", "init": "scratch", "method": "representative", "batch_size": 16.0}]},
        ["experiments[0].batch_size: 16.0 is a float where a whole number is needed; write 16"],
    ),
    "input_size_not_a_divisor": (
        {"training": {"input_size": 100}},
        ["100 is not one of [32, 64, 128, 256, None]", "On instance['training']['input_size']"],
    ),
    "input_size_below_the_model": (
        {"experiments": [{"model": "inception_v3", "init": "imagenet", "method": "representative"}], **MICRO_OFF},
        [
            "experiments[0] (inception_v3/imagenet/representative): model inception_v3 needs an input size "
            "of at least 75 px, training.input_size is 64"
        ],
    ),
    "repeated_experiment": (
        {
            "experiments": [
                {"model": "small_cnn", "init": "scratch", "method": "representative"},
                {"model": "small_cnn", "init": "scratch", "method": "representative", "epochs": 2},
            ]
        },
        ["experiments[1] (small_cnn/scratch/representative) repeats experiments[0]"],
    ),
    "small_cnn_from_imagenet": (
        {"experiments": [{"model": "small_cnn", "init": "imagenet", "method": "representative"}], **MICRO_OFF},
        ["custom and small_cnn have no ImageNet weights", "On instance['experiments'][0]"],
    ),
    "baseline_block_not_a_divisor": (
        {"evaluation": {"baseline_block_px": 48}},
        ["48 is not one of [1, 2, 4, 8, 16, 32, 64, 128, 256]", "On instance['evaluation']['baseline_block_px']"],
    ),
    "diameter_of_a_misspelt_class": (
        {"micrographs": {"diameters_nm": {"ebola": 80}}},
        ["On instance['micrographs']['diameters_nm']", "'ebola'"],
    ),
    "diameter_of_a_class_not_classified": (
        {"micrographs": {"diameters_nm": {"Dengue": 50}}},
        ["micrographs.diameters_nm names ['Dengue'], not among classes.classification"],
    ),
    "crop_not_a_multiple": (
        {"micrographs": {"crop_px": 40}},
        ["micrographs.crop_px 40 is not a multiple of 16 (2**(len(micrographs.widths) - 1)"],
    ),
    "micrograph_model_unknown": (
        {"micrographs": {"experiments": [{"model": "foo", "init": "scratch", "method": "representative"}]}},
        ["'foo' is not one of ['custom', 'small_cnn'"],
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_value_is_refused_before_any_job_naming_its_key(tmp_path, case):
    overlay, expected = REFUSED[case]
    proc = _dry_run(tmp_path, overlay)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    for text in expected:
        assert text in out, out[-3000:]
    assert "Job stats" not in out


def test_a_micrograph_experiment_not_configured_is_refused_whatever_the_target(tmp_path):
    overlay = {"micrographs": {"experiments": [{"model": "vgg16", "init": "scratch", "method": "representative"}]}}
    proc = _dry_run(tmp_path, overlay, "results/tables/table1.csv")
    assert proc.returncode != 0
    assert "micrographs.experiments[0] (vgg16/scratch/representative) is not a configured experiment" in (
        proc.stdout + proc.stderr
    )


def test_the_checks_pass_the_shipped_configs():
    from snakemake.utils import update_config

    default = default_config()
    paper = default_config()
    update_config(paper, yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    for config in (default, paper):
        assert integer_problems(config, SCHEMA) == [] and config_problems(config) == []


def test_key_path_and_integer_problems_name_the_key():
    assert key_path(["training", "epochs", "scratch"]) == "training.epochs.scratch"
    assert key_path(["experiments", 1, "epochs"]) == "experiments[1].epochs"
    config = default_config()
    config["micrographs"]["max_test_images_per_class"] = 3.0  # an integer or null
    config["overlap"]["coarse_nm"] = 2  # a number: an int is fine
    assert integer_problems(config, SCHEMA) == [
        "micrographs.max_test_images_per_class: 3.0 is a float where a whole number is needed; write 3"
    ]
