"""Smoke tests of the benchmark scripts (benchmarks/): each runs on a tiny input and writes its JSON.

No timing is asserted: only that the scripts run, write the expected keys and positive
numbers, and that the curation paths agree (a correctness check of the comparison).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CI_CONFIG

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def run_benchmark(script: str, out: Path, *args: str, timeout: float = 600) -> dict:
    """Run ``benchmarks/{script}`` with its outputs under ``out``; return its JSON."""
    env = dict(os.environ, TEMVIRUS_BENCH_OUT=str(out))
    json_path = out / f"{Path(script).stem}.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--out", str(json_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(json_path.read_text())


def positive(stats: dict) -> bool:
    return stats["n"] >= 1 and stats["median"] > 0 and stats["min"] > 0


def test_curation_quick(tmp_path):
    result = run_benchmark("curation.py", tmp_path, "--quick")
    assert result["machine"]["cpu_count"] > 0
    # the figures name the CPU and the instruction set torch's kernels used (docs/lineage.md)
    assert result["machine"]["cpu_model"] and result["machine"]["torch_cpu_capability"]
    comp = result["comparison"]
    assert comp["n_patches"] > 0 and comp["n_images"] > 0
    assert set(comp["paths"]) == {"project", "pil", "pil_plain", "full"}
    for path, stats in comp["paths"].items():
        assert positive(stats["seconds"]) and positive(stats["patches_per_second"]), path
        if path != "project":
            assert positive(stats["speedup_of_project"])
    agreement = comp["agreement"]
    assert agreement["full"]["all"]["max_abs_diff"] == 0  # the same resampling, whole image vs windows
    assert agreement["pil"]["all"]["max_abs_diff"] <= 1  # PIL at the same positions: float32 rounding
    sweep = result["scaling"]["project"]
    assert len(sweep["points"]) == 2
    for point in sweep["points"]:
        assert (
            point["n_patches"] > 0 and point["seconds"] > 0 and point["peak_rss_mib"] > 0 and point["peak_anon_mib"] > 0
        )
    assert {"slope", "intercept", "r2"} <= set(sweep["fit_seconds_vs_patches"])


def test_training_quick(tmp_path):
    result = run_benchmark("training.py", tmp_path, "--quick", "--memory")
    assert result["machine"]["torch"] and result["machine"]["device"] == "cpu"
    custom = result["models"]["custom"]
    assert custom["n_samples"] > 0
    assert set(custom["methods"]) == {"project", "torchvision", "bound"}
    for method, stats in custom["methods"].items():
        assert positive(stats["samples_per_second"]), method
        if method != "project":
            assert positive(stats["project_speed_ratio"])
    for method, mem in custom["memory"].items():
        assert mem["peak_rss_mib"] > 0 and mem["seconds"] > 0, method


def test_end_to_end_quick(tmp_path):
    result = run_benchmark("end_to_end.py", tmp_path, "--quick", "--workdir", str(tmp_path / "work"))
    assert result["dry_run"]["n_jobs"] > 0
    assert result["dry_run"]["job_counts"].get("train_model", 0) >= 1
    assert result["lr_change"]["new"] == pytest.approx(0.5 * result["lr_change"]["old"])


def test_parse_jobs_of_a_snakemake_log():
    sys.path.insert(0, str(BENCH))
    from end_to_end import check_rerun, parse_jobs

    log = "\n".join(
        [
            "[Sat Nov 21 14:32:09 2026]",
            "rule train_model:",
            "    input: results/patches/representative/patches.csv",
            "    output: results/models/custom/scratch/representative/best.pt",
            "    jobid: 3",
            "    reason: Params have changed since last execution: training",
            "    wildcards: model=custom, init=scratch, method=representative",
            "    resources: tmpdir=/tmp",
            "[Sat Nov 21 14:32:40 2026]",
            "Finished jobid: 3 (Rule: train_model)",
            "[Sat Nov 21 14:32:41 2026]",
            "localrule all:",
            "    jobid: 0",
            "    reason: Input files updated by another job",
        ]
    )
    jobs = parse_jobs(log)
    assert [(j["rule"], j["jobid"]) for j in jobs] == [("all", 0), ("train_model", 3)]
    assert jobs[1]["seconds"] == 31 and jobs[1]["wildcards"] == "model=custom, init=scratch, method=representative"
    check = check_rerun(jobs, jobs, "custom/scratch/representative")
    assert check["n_jobs"] == 1 and check["only_that_model_ran"]


@pytest.mark.slow
def test_end_to_end_rerun_of_one_model(tmp_path, default_run):
    result = run_benchmark(
        "end_to_end.py",
        tmp_path,
        "--from-workdir",
        str(default_run),
        "--workdir",
        str(tmp_path / "work"),
        "--configfile",
        str(CI_CONFIG),  # the suite's size of the default, as default_run was made
    )
    assert result["noop"]["n_jobs"] == 0  # a finished run is up to date
    check = result["rerun_check"]
    assert check["train_model_ran_for"] == [result["args"]["experiment"]]  # the config's first experiment
    assert check["only_that_model_ran"] is True, check


def test_gpu_check_quick(tmp_path, monkeypatch):
    """benchmarks/gpu_check.py: --prepare a tiny archive (a few real crops, else synthetic patches), then --quick on the CPU."""
    from conftest import REAL_CROPS, write_patch_split

    data = tmp_path / "data.npz"
    prepare = [
        sys.executable,
        str(BENCH / "gpu_check.py"),
        "--prepare",
        "--data",
        str(data),
        "--site-zip",
        str(tmp_path / "site.zip"),
        "--downsample",
        "4",
    ]
    if REAL_CROPS.is_dir():
        prepare += ["--crops", str(REAL_CROPS), "--images-per-class", "1"]
        classes = 9
    else:
        write_patch_split(
            tmp_path / "patches",
            ["Adenovirus", "Ebola", "Orf"],
            {"train_augmented": 2, "train": 3, "validation": 2, "test": 2},
            size=256,
        )
        prepare += ["--from-patches", str(tmp_path / "patches")]
        classes = 3
    proc = subprocess.run(prepare, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with np.load(data) as npz:
        manifest = json.loads(str(npz["manifest"]))
        assert npz["train_x"].shape[1:] == (64, 64) and len(npz["test_y"]) == sum(manifest["counts"]["test"].values())
    assert (
        len(manifest["classes"]) == classes and manifest["recipe"]["per_class"] == 736 and manifest["downsample"] == 4
    )

    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), TEMVIRUS_BENCH_OUT=str(tmp_path / "bench"))
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--quick", "--device", "cpu", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    stages = result["stages"]
    assert set(stages) == {"cuda_tests", "throughput", "real_training", "paper_scale"}
    assert not any("error" in s for s in stages.values()), {k: s.get("error") for k, s in stages.items()}
    tests = stages["cuda_tests"]
    assert tests["passed"] == tests["failed"] == 0 and tests["skipped"] >= 5  # no CUDA here: every cuda test skipped
    assert any("needs a CUDA GPU" in reason for reason in tests["skip_reasons"])
    for method, stats in stages["throughput"]["models"]["custom"]["methods"].items():
        assert positive(stats["samples_per_second"]), method
    real = stages["real_training"]
    assert real["n_train_balanced"] == 2 * classes and real["epochs_run"] == 1 and 0 <= real["test_accuracy"] <= 1
    assert real["n_test"] == sum(manifest["counts"]["test"].values())
    assert stages["paper_scale"]["estimated_300_epoch_minutes"] > 0
    table = proc.stdout[proc.stdout.index("== GPU check") :].splitlines()
    assert table[1].startswith("cuda tests       : 0 passed, 0 failed") and table[2].startswith("custom ")
    assert table[3].startswith("real crops custom: test accuracy") and table[4].startswith("paper scale      :")
    # a run of some stages only (`--stages real_training`) prints theirs, no line for the others
    monkeypatch.syspath_prepend(str(BENCH))
    from gpu_check import table as summary

    assert summary(dict(result, stages={"real_training": real})).splitlines()[1:] == [table[3]]


@pytest.mark.parametrize(
    ("script", "option", "value", "message"),
    [
        ("curation.py", "--repeats", "0", "argument --repeats: must be at least 1, got 0"),
        ("curation.py", "--scale", "1.5", "argument --scale: must be in (0, 1], got 1.5"),
        ("end_to_end.py", "--cores", "0", "argument --cores: must be at least 1, got 0"),
        ("gpu_check.py", "--threads", "-1", "argument --threads: must be at least 0, got -1"),
        ("micrographs.py", "--threads", "0", "argument --threads: must be at least 1, got 0"),
        ("overlap.py", "--overlaps", "-3", "argument --overlaps: must be at least 0, got -3"),
        ("real_crops.py", "--budget-min", "nan", "argument --budget-min: must be a finite number, above 0, got 'nan'"),
        ("training.py", "--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
        ("training.py", "--seed", "x", "argument --seed: must be a whole number, at least 0, got 'x'"),
        ("turned_leaks.py", "--planted", "0", "argument --planted: must be at least 1, got 0"),
    ],
)
def test_numeric_options_out_of_range_are_refused_before_any_work(tmp_path, script, option, value, message):
    """The benchmarks' numeric options had no range checks: a bad value (`--repeats 0`,
    `--batch-size 0`, `--scale 1.5`) was accepted and found, if at all, once the work had begun.
    Each is refused by argparse (temvirus.cli's _number), naming the option and its range, exit 2,
    before any work."""
    env = dict(os.environ, TEMVIRUS_BENCH_OUT=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), option, value],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 2 and f"{script}: error: {message}" in proc.stderr, proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_turned_leaks_quick(tmp_path, tiny_synthetic):
    """The free-turn leak measure on the tiny synthetic dataset: turned copies found and failed, no
    look-alike failed."""
    result = run_benchmark(
        "turned_leaks.py", tmp_path, "--data", str(tiny_synthetic / "raw"), "--planted", "4", "--noise", "0.02"
    )
    assert result["planted"] == 4 and result["planted_failed"] == 4 and result["mirror_right"] == 4
    assert result["look_alike_pairs"] > 0 and result["look_alikes_failed"] == 0
    assert result["turn_error_deg_max"] <= 1.0
