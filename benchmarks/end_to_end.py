"""End-to-end benchmark: wall time and test figures of the README's main command, and a one-model rerun.

What it measures
----------------
1. ``full``: ``make run``'s command, ``snakemake --cores N`` on ``config/config.yaml`` (the
   embedded synthetic default), in a fresh scratch workdir whose ``config/`` and
   ``resources/paper/`` link to the repo's (``tests/conftest.py``'s ``make_workdir``), so the
   repo's ``results/`` and ``resources/dataset/`` are never touched. Wall time, jobs per rule and per-job times, and
   each experiment's accuracy and macro-F1 on all its test patches (Table 2; the default's
   target for its best model: >= 0.90 accuracy, >= 0.85 macro-F1, within 8 minutes on 2 cores).
2. ``noop``: the same command again: nothing may run (the cost of building the DAG).
3. ``rerun``: the same command with a ``--configfile`` overlay that changes the learning rate
   of one experiment (``--experiment MODEL/INIT/METHOD``, default the config's first). Before
   it, a dry run with ``--forcerun results/models/{model}/{init}/{method}/best.pt`` lists the jobs
   downstream of that model (its ``train_model``, ``evaluate_model``, ``error_tracing``,
   and the aggregates: Table 2, Fig 3, the audit). The rerun passes when every job that ran
   is in that list (and its ``train_model`` ran); otherwise the extra jobs are listed and the
   script exits 1 after writing its JSON (``--allow-extra-jobs``: exit 0).

   The overlay sets that experiment's own ``lr`` (an ``experiments`` entry may override its
   training settings; ``temvirus.experiments``).

``--quick`` (seconds, no training): only dry runs in a fresh workdir: the DAG's job counts,
that the overlay is accepted (schema) and which jobs it would make run.
``--from-workdir DIR`` starts from a copy of a finished run (e.g. the test suite's
``default_run``) instead of the timed full run. ``--no-rerun``: only the full run and its
figures (the 8-minute check). ``--configfile FILE ...``: overlays on top of
``config/config.yaml`` in every run (the test suite passes ``tests/ci.yaml``, its size of the
default, with ``--from-workdir`` its run).

How to run (``benchmarks/out/end_to_end.json`` gets the figures; logs in ``benchmarks/out/e2e/``)::

    .venv/bin/python benchmarks/end_to_end.py                    # full run, no-op, one-model rerun
    .venv/bin/python benchmarks/end_to_end.py --no-rerun                 # the 8-minute check: wall time, accuracy, macro-F1
    .venv/bin/python benchmarks/end_to_end.py --quick            # dry runs only
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT, REPO, machine_info, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
import yaml  # noqa: E402
from conftest import snakemake_cmd  # noqa: E402  (the tests' way to run the workflow in a scratch workdir)

RULE_LINE = re.compile(r"^(?:local)?rule (\w+):\s*$")
FIELD_LINE = re.compile(r"^\s+(\w+): (.*)$")
FINISHED = re.compile(r"Finished jobid: (\d+) \(Rule: (\w+)\)")
TIMESTAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]\s*$")
TARGET_RULES = {"all"}


# ----------------------------------------------------------------------------- snakemake output


def parse_jobs(log: str) -> list[dict]:
    """Jobs announced in a snakemake log (a run or a dry run): rule, jobid, wildcards, reason, times."""
    jobs, current, last_time = {}, None, None
    finished: dict[int, datetime] = {}
    for line in log.splitlines():
        stamp = TIMESTAMP.match(line)
        if stamp:
            last_time = datetime.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y")
            current = None
            continue
        rule = RULE_LINE.match(line)
        if rule:
            current = {"rule": rule.group(1), "wildcards": "", "reason": "", "started": last_time}
            continue
        done = FINISHED.search(line)
        if done:
            finished[int(done.group(1))] = last_time
            current = None
            continue
        field = FIELD_LINE.match(line) if current is not None else None
        if field:
            key, value = field.groups()
            if key in ("wildcards", "reason", "output"):
                current[key] = value.strip()
            elif key == "jobid":
                current["jobid"] = int(value)
                jobs[current["jobid"]] = current
        elif current is not None and line and not line.startswith(" "):
            current = None
    out = []
    for jobid, job in sorted(jobs.items()):
        end = finished.get(jobid)
        seconds = (end - job["started"]).total_seconds() if end and job["started"] else None
        out.append(
            {
                "rule": job["rule"],
                "jobid": jobid,
                "wildcards": job["wildcards"],
                "reason": job["reason"],
                "seconds": seconds,
            }
        )
    return out


def job_key(job: dict) -> str:
    return f"{job['rule']}[{job['wildcards']}]" if job["wildcards"] else job["rule"]


def counts(jobs: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for job in jobs:
        out[job["rule"]] = out.get(job["rule"], 0) + 1
    return dict(sorted(out.items()))


def run_snakemake(workdir: Path, args: list[str], log_path: Path, cores: int, timeout: float) -> dict:
    """Run the workflow command in ``workdir``; returns wall time, return code and the jobs it announced."""
    cmd = snakemake_cmd(workdir, *args, ci=False)
    cmd[cmd.index("--cores") + 1] = str(cores)
    env = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )  # as `make run`
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    seconds = time.perf_counter() - started
    log = proc.stdout + proc.stderr
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(f"$ {' '.join(cmd)}\n{log}")
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake failed ({proc.returncode}), see {log_path}:\n{log[-4000:]}")
    jobs = parse_jobs(log)
    return {
        "command": cmd,
        "seconds": seconds,
        "log": str(log_path),
        "jobs": jobs,
        "job_counts": counts(jobs),
        "n_jobs": sum(1 for j in jobs if j["rule"] not in TARGET_RULES),
    }


# ----------------------------------------------------------------------------- the overlay


def experiment_parts(folder: str) -> dict[str, str]:
    """``{model, init, method}`` of an experiment folder ``{model}/{init}/{method}`` (``--experiment``)."""
    from temvirus.experiments import PARTS

    values = folder.strip("/").split("/")
    if len(values) != len(PARTS):
        raise SystemExit(f"--experiment {folder!r}: expected {'/'.join(PARTS)}")
    return dict(zip(PARTS, values, strict=True))


def job_wildcards(job: dict) -> dict[str, str]:
    """A job's wildcards as Snakemake's log shows them (``model=custom, init=scratch, ...``)."""
    return dict(item.split("=", 1) for item in job["wildcards"].split(", ") if "=" in item)


def lr_overlay(experiment: str, factor: float, overlays: list[str]) -> tuple[dict, dict]:
    """``(overlay, description)``: the config change that sets the own learning rate of
    ``experiment`` (``{model}/{init}/{method}``), in config/config.yaml with ``overlays`` on
    top, as Snakemake merges them."""
    from snakemake.utils import update_config

    from temvirus.experiments import experiment_name, find_experiment, resolve_training

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for path in overlays:
        update_config(config, yaml.safe_load(Path(path).read_text()))
    try:
        entry = find_experiment(config["experiments"], experiment_parts(experiment))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    old_lr = float(resolve_training(config["training"], entry)["lr"])
    new_lr = old_lr * factor
    experiments = [dict(e, lr=new_lr) if e is entry else e for e in config["experiments"]]
    return {"experiments": experiments}, {
        "key": f"experiments[{experiment_name(entry)}].lr",
        "old": old_lr,
        "new": new_lr,
    }


def check_rerun(ran: list[dict], allowed: list[dict] | None, experiment: str) -> dict:
    """Did only the jobs of ``experiment`` (``{model}/{init}/{method}``) and their downstream aggregates run?"""
    from temvirus.experiments import experiment_folder

    ran_keys = sorted(job_key(j) for j in ran if j["rule"] not in TARGET_RULES)
    trained = [j for j in ran if j["rule"] == "train_model"]
    out = {
        "n_jobs": len(ran_keys),
        "jobs": ran_keys,
        "train_model_ran_for": sorted(experiment_folder(job_wildcards(j)) for j in trained),
    }
    if allowed is not None:
        allowed_keys = {job_key(j) for j in allowed}
        out["allowed_jobs"] = sorted(k for k in allowed_keys if not k.startswith(tuple(TARGET_RULES)))
        out["extra_jobs"] = sorted(set(ran_keys) - allowed_keys)
        out["only_that_model_ran"] = not out["extra_jobs"] and out["train_model_ran_for"] == [experiment]
    return out


# ----------------------------------------------------------------------------- main


def first_experiment() -> str:
    """``{model}/{init}/{method}`` of config/config.yaml's first experiment."""
    from temvirus.experiments import experiment_folder

    return experiment_folder(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["experiments"][0])


def parse_args(argv=None):
    from temvirus.cli import number_in_range  # argparse types with their ranges

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="dry runs only (seconds): DAG, overlay validity, jobs it would run"
    )
    parser.add_argument(
        "--experiment",
        default=first_experiment(),
        metavar="MODEL/INIT/METHOD",
        help="the experiment whose learning rate changes (default: the config's first)",
    )
    parser.add_argument(
        "--lr-factor", type=number_in_range(float, 0, above=True), default=0.5, help="new lr = old lr * factor"
    )
    parser.add_argument("--cores", type=number_in_range(int, 1), default=2)
    parser.add_argument("--workdir", default=str(OUT / "e2e" / "work"), help="scratch workdir (emptied first)")
    parser.add_argument("--from-workdir", help="copy this finished run instead of timing a full run")
    parser.add_argument(
        "--timeout", type=number_in_range(float, 0, above=True), default=4 * 3600, help="seconds per snakemake command"
    )
    parser.add_argument("--no-rerun", action="store_true", help="stop after the full run (wall time and test figures)")
    parser.add_argument(
        "--allow-extra-jobs", action="store_true", help="exit 0 even when jobs of other models re-ran (default: exit 1)"
    )
    parser.add_argument(
        "--configfile", nargs="+", default=[], help="overlays on top of config/config.yaml in every run"
    )
    parser.add_argument("--out", default=str(OUT / "end_to_end.json"))
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    workdir = Path(args.workdir).resolve()
    logs = workdir.parent / "logs"
    if workdir.exists():
        shutil.rmtree(workdir)
    overlays = [str(Path(f).resolve()) for f in args.configfile]
    base_args = ["--configfile", *overlays] if overlays else []
    overlay, change = lr_overlay(args.experiment, args.lr_factor, overlays)
    overlay_path = workdir.parent / "lr_overlay.yaml"
    overlay_path.parent.mkdir(parents=True, exist_ok=True)
    overlay_path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    result = {
        "benchmark": "end_to_end",
        "machine": machine_info(),
        "args": vars(args),
        "lr_change": change,
        "overlay": overlay,
    }
    print(f"lr change: {change['key']} {change['old']} -> {change['new']}", flush=True)
    config_args = ["--configfile", str(REPO / "config" / "config.yaml"), *overlays, str(overlay_path)]

    if args.quick:
        dry = run_snakemake(workdir, ["--dry-run", *base_args], logs / "dry_full.log", args.cores, args.timeout)
        dry_overlay = run_snakemake(
            workdir, ["--dry-run", *config_args], logs / "dry_overlay.log", args.cores, args.timeout
        )
        result["dry_run"] = {"n_jobs": dry["n_jobs"], "job_counts": dry["job_counts"], "seconds": dry["seconds"]}
        result["dry_run_overlay"] = {
            "n_jobs": dry_overlay["n_jobs"],
            "job_counts": dry_overlay["job_counts"],
            "seconds": dry_overlay["seconds"],
        }
        print(
            f"dry run: {dry['n_jobs']} jobs {dry['job_counts']} ({dry['seconds']:.1f} s); with the overlay: {dry_overlay['n_jobs']} jobs"
        )
    else:
        if args.from_workdir:
            shutil.copytree(args.from_workdir, workdir, symlinks=True)  # keeps mtimes and .snakemake metadata
            result["full"] = None
            print(f"copied the finished run {args.from_workdir}", flush=True)
        else:
            print(f"full run in {workdir} ...", flush=True)
            full = run_snakemake(workdir, base_args, logs / "full.log", args.cores, args.timeout)
            result["full"] = full
            print(f"full run: {full['seconds']:.1f} s, {full['n_jobs']} jobs", flush=True)
        result["table2"] = table2_rows(workdir)
    if not args.quick and not args.no_rerun:
        noop = run_snakemake(workdir, base_args, logs / "noop.log", args.cores, args.timeout)
        result["noop"] = noop
        print(f"no-op rerun: {noop['seconds']:.1f} s, {noop['n_jobs']} jobs", flush=True)
        target = f"results/models/{args.experiment}/best.pt"
        downstream = run_snakemake(
            workdir,
            ["--dry-run", *base_args, "--forcerun", target],
            logs / "dry_downstream.log",
            args.cores,
            args.timeout,
        )
        result["downstream_of_model"] = {
            "forcerun": target,
            "jobs": sorted(job_key(j) for j in downstream["jobs"] if j["rule"] not in TARGET_RULES),
        }
        predicted = run_snakemake(
            workdir, ["--dry-run", *config_args], logs / "dry_rerun.log", args.cores, args.timeout
        )
        rerun = run_snakemake(workdir, config_args, logs / "rerun.log", args.cores, args.timeout)
        result["rerun"] = rerun
        result["rerun_predicted_jobs"] = predicted["job_counts"]
        result["rerun_check"] = check_rerun(rerun["jobs"], downstream["jobs"], args.experiment)
        print(f"rerun after the lr change: {rerun['seconds']:.1f} s, {rerun['n_jobs']} jobs", flush=True)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    path = write_result(args.out, result)
    report(result)
    print(f"wrote {path}")
    if not args.allow_extra_jobs and result.get("rerun_check", {}).get("only_that_model_ran") is False:
        raise SystemExit(
            "FAIL: the lr change of one experiment re-ran other experiments' jobs (JSON written; --allow-extra-jobs to exit 0)"
        )
    return result


def table2_rows(workdir: Path) -> list[dict]:
    """Each experiment's test figures from the run's Table 2 (all its test patches)."""
    import pandas as pd

    table = pd.read_csv(workdir / "results" / "tables" / "table2.csv")
    return table[["experiment", "n_test", "accuracy", "f1_macro"]].to_dict("records")


def report(result: dict) -> None:
    print("\n== end to end ==")
    if "dry_run" in result:
        print(
            f"dry run of the default workflow: {result['dry_run']['n_jobs']} jobs; with the lr overlay: {result['dry_run_overlay']['n_jobs']} jobs"
        )
        return
    full = result.get("full")
    if full:
        print(
            f"full run (`make run` command, --cores {result['args']['cores']}): {full['seconds']:.1f} s, {full['n_jobs']} jobs"
        )
        slow = sorted((j for j in full["jobs"] if j["seconds"] is not None), key=lambda j: -j["seconds"])[:5]
        print("  slowest jobs: " + ", ".join(f"{job_key(j)} {j['seconds']:.0f} s" for j in slow))
        print(
            f"  load average at start {result['machine']['load_average_at_start']}, at end {result['machine']['load_average_at_end']}"
        )
    for row in result.get("table2", []):
        print(
            f"  {row['experiment']}: accuracy {row['accuracy']:.3f}, macro-F1 {row['f1_macro']:.3f} on {row['n_test']} test patches"
        )
    if "noop" not in result:
        return
    print(f"no-op rerun: {result['noop']['seconds']:.1f} s, {result['noop']['n_jobs']} jobs")
    check = result["rerun_check"]
    print(
        f"rerun after changing {result['lr_change']['key']}: {result['rerun']['seconds']:.1f} s, {check['n_jobs']} jobs: {', '.join(check['jobs'])}"
    )
    print(f"  train_model ran for: {check['train_model_ran_for']}")
    verdict = (
        "PASS: only that model's jobs (and their aggregates) ran"
        if check.get("only_that_model_ran")
        else f"FAIL: jobs outside that model's downstream ran: {check.get('extra_jobs')}"
    )
    print(f"  {verdict}")


if __name__ == "__main__":
    main()
