"""Where the workflow runs: the default profile, and GPU jobs limited to the GPUs there are.

`train_model`, `evaluate_model`, `calibrate_micrographs` and `analyse_micrographs` hold a `gpu` resource (0 with training.device cpu), and the
machine-wide `gpu` limit defaults to the GPUs the machine shows (temvirus.experiments.
visible_gpus), so any `snakemake` command, with or without a profile, runs at most as many GPU
jobs at once as there are GPUs. A job's resources are capped by the machine-wide limits: on a
machine without a GPU the GPU rules hold none.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from conftest import REPO, dry_run_resources, snakemake_cmd

from temvirus.experiments import visible_gpus

GPU_RULES = {"train_model", "evaluate_model", "calibrate_micrographs", "analyse_micrographs"}


def test_visible_gpus_counts_driver_entries_within_cuda_visible_devices(tmp_path, monkeypatch):
    driver = tmp_path / "gpus"
    for bus in ("0000:01:00.0", "0000:02:00.0", "0000:03:00.0"):
        (driver / bus).mkdir(parents=True)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus(driver) == 3
    assert visible_gpus(tmp_path / "no-driver") == 0
    for chosen, expected in (("1", 1), ("0,2", 2), ("0,1,2,3", 3), ("", 0), ("-1", 0)):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", chosen)
        assert visible_gpus(driver) == expected, chosen


def test_visible_gpus_agrees_with_nvidia_smi(monkeypatch):
    if not shutil.which("nvidia-smi"):
        pytest.skip("no nvidia-smi on this machine: the driver's count cannot be compared")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    assert visible_gpus() == sum(line.startswith("GPU ") for line in listed.splitlines())


def test_default_profile_is_read_and_sets_no_machine_limits():
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    # read on a cluster too (together with --profile profiles/slurm): no machine-wide limits here
    assert "resources" not in profile and "set-resources" not in profile, profile
    assert profile["rerun-incomplete"] is True
    assert not (REPO / "profiles" / "local").exists()


@pytest.mark.slow
def test_gpu_jobs_are_limited_by_the_machines_gpus_without_any_profile(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cuda = tmp_path / "cuda.yaml"
    cuda.write_text("training:\n  device: cuda\n")
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text("training:\n  device: cpu\n")
    no_profile = ("--workflow-profile", "none")
    runs = {
        # no profile, no --resources: at most visible_gpus() GPUs per job and at once
        "machine": (
            dry_run_resources(tmp_path / "a", *no_profile, "--configfile", str(cuda)),
            str(min(1, visible_gpus())),
        ),
        # an explicit limit: each GPU job holds one GPU
        "explicit": (
            dry_run_resources(tmp_path / "b", *no_profile, "--resources", "gpu=2", "--configfile", str(cuda)),
            "1",
        ),
        # training on the CPU holds no GPU
        "cpu": (dry_run_resources(tmp_path / "c", *no_profile, "--resources", "gpu=2", "--configfile", str(cpu)), "0"),
    }
    for name, (resources, expected) in runs.items():
        assert GPU_RULES <= set(resources), (name, sorted(resources))
        for rule, res in resources.items():
            assert res.get("gpu") == (expected if rule in GPU_RULES else None), (name, rule, res)


@pytest.mark.slow
def test_a_run_reports_the_machine_wide_gpu_limit(tmp_path, monkeypatch):
    """A real (tiny) run without any profile provides `gpu` = the machine's GPUs."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    small = tmp_path / "small.yaml"
    small.write_text("dataset:\n  synthetic:\n    scale: 0.005\n    overlaps: 1\n")
    cmd = snakemake_cmd(
        tmp_path / "work", "results/raw/synthetic_truth.csv", "--workflow-profile", "none", "--configfile", str(small)
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f'Provided resources: gpu=Resource("gpu", {visible_gpus()})' in done.stderr, done.stderr[-3000:]
