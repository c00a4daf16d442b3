"""The profiles, and the default workflow through ``--profile profiles/slurm`` on a real
single-node SLURM cluster (tests/slurm_cluster.py).

The SLURM runs (module fixture ``runs``), in one scratch working directory:
1. first invocation: one job of the kill target (train_model, a GPU rule) is cancelled with
   ``scancel`` while it runs, so the invocation fails;
2. next invocation: finishes the workflow, re-running the cancelled job and what depends on
   it, and nothing that had completed.
The reference is the session's local run of the default workflow (``default_run``).
Only test-only overrides are added to the real profile: ``--slurm-status-command squeue``
(the test cluster has no accounting database, so ``sacct`` fails) and a 1 s delay before the
first status check (the default 40 s would dominate the run), plus ``--retries 0`` for the
invocation whose job is cancelled (else Snakemake would resubmit it at once).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, assert_same_recorded_outputs, dry_run_resources, snakemake_cmd
from slurm_cluster import run, slurm_cluster  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow

SLURM_TEST_ARGS = [
    "--profile",
    str(REPO / "profiles" / "slurm"),
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
]
GPU_RULES = {"train_model", "evaluate_model", "calibrate_micrographs", "analyse_micrographs"}
#: the rules of tables, figures and HTML pages made from small tables (workflow/rules: localrules)
LOCAL_TABLE_RULES = {
    "split_agreement",
    "table1",
    "split_summary",
    "table2",
    "paper_confusion_figure",
    "table_html",
    "per_class_html",
    "report_summary",
}
KILL_TARGET = "train_model"
RUN_TIMEOUT = 900


def rule_of(comment: str) -> str:
    """The rule of a job from the comment the plugin gives it (rule_{name}[_wildcards_{...}])."""
    return re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", comment).group(1)


@dataclass
class Run:
    workdir: Path
    returncode: int
    log: str
    seconds: float

    def rules(self) -> dict[str, bool]:
        """Rules of the jobs this invocation started: name -> ran locally (``localrule``)."""
        return {name: bool(local) for local, name in re.findall(r"^(local)?rule (\w+):$", self.log, re.MULTILINE)}


class Invocation:
    """A Snakemake process on the workflow in ``workdir``, its output going to a file there."""

    def __init__(self, workdir: Path, *args: str):
        self.workdir = workdir
        self.logfile = workdir / f"snakemake-{len(list(workdir.glob('snakemake-*.out')))}.out"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        with open(self.logfile, "w") as out:
            self.proc = subprocess.Popen(
                snakemake_cmd(workdir, *args),
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()

    def finish(self) -> Run:
        try:
            self.proc.wait(timeout=RUN_TIMEOUT - (time.monotonic() - self.started))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"snakemake ran past {RUN_TIMEOUT} s in {self.workdir}:\n{self.logfile.read_text()[-4000:]}")
        return Run(self.workdir, self.proc.returncode, self.logfile.read_text(), time.monotonic() - self.started)

    def kill(self) -> None:
        """Kill this Snakemake and the processes it started (its own process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def cancel_when_running(rule: str, invocation: Invocation) -> str:
    """scancel the first job of ``rule`` seen running; return its SLURM job id."""
    deadline = invocation.started + RUN_TIMEOUT
    while invocation.proc.poll() is None and time.monotonic() < deadline:
        for line in run(["squeue", "--noheader", "--format=%i|%k|%T"]).stdout.splitlines():
            jobid, comment, state = line.split("|")
            if rule_of(comment) == rule and state == "RUNNING":
                assert run(["scancel", jobid]).returncode == 0
                return jobid
        time.sleep(0.5)
    pytest.fail(
        f"no running {rule} job seen (snakemake exit code {invocation.proc.poll()}):\n"
        f"{invocation.logfile.read_text()[-4000:]}"
    )


@dataclass
class Runs:
    killed: Run
    rerun: Run
    cancelled_jobid: str
    jobs: list[dict[str, str]]


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory) -> Runs:  # noqa: F811 (the fixture)
    workdir = tmp_path_factory.mktemp("slurm")
    invocations = [Invocation(workdir, *SLURM_TEST_ARGS, "--retries", "0")]
    try:
        cancelled = cancel_when_running(KILL_TARGET, invocations[0])
        killed = invocations[0].finish()
        invocations.append(Invocation(workdir, *SLURM_TEST_ARGS))
        rerun = invocations[1].finish()
    finally:
        for invocation in invocations:
            invocation.kill()
    print(
        f"wall time through SLURM: {killed.seconds:.0f} s (until the failure after scancel) "
        f"+ {rerun.seconds:.0f} s (next invocation)"
    )
    return Runs(killed, rerun, cancelled, slurm_cluster.jobs())


def test_cancelled_job_fails_the_invocation_and_the_next_one_reruns_it(runs):
    assert runs.killed.returncode != 0, "the invocation whose job was cancelled did not fail"
    assert f"SLURM-job '{runs.cancelled_jobid}' failed, SLURM status is: 'CANCELLED'" in runs.killed.log
    assert runs.rerun.returncode == 0, f"the next invocation failed:\n{runs.rerun.log[-4000:]}"
    again = runs.rerun.rules()
    assert KILL_TARGET in again
    done_before = set(runs.killed.rules()) - set(again) - {KILL_TARGET}
    assert "synthetic_dataset" in done_before, "jobs completed before the cancel were run again"
    cancelled = next(j for j in runs.jobs if j["JobId"] == runs.cancelled_jobid)
    assert cancelled["JobState"] == "CANCELLED"


def test_every_rule_ran_as_a_slurm_job_and_gpu_rules_on_the_gpu_partition(runs):
    ran = {**runs.killed.rules(), **runs.rerun.rules()}
    remote = {name for name, local in ran.items() if not local}
    # Only `all` and the workflow's localrules run where Snakemake runs: `check_classes` (a
    # few-second check of the class list against the raw tables) and the tables, figures and
    # HTML pages made from small tables, none worth a queue; the download rules (localrules too)
    # are not in the default workflow, which generates its data.
    assert set(ran) - remote == {"all", "check_classes", *LOCAL_TABLE_RULES}
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in runs.jobs:
        by_rule.setdefault(rule_of(job["Comment"]), []).append(job)
    assert set(by_rule) == remote, "SLURM jobs do not match the workflow's remote rules"
    assert GPU_RULES <= remote, f"GPU rules {GPU_RULES - remote} not in the default workflow"
    for rule, jobs in by_rule.items():
        for job in jobs:
            if rule in GPU_RULES:
                assert (job["Partition"], job["TresPerJob"], job["JOB_GRES"]) == ("gpu", "gres:gpu:1", "gpu:1"), job
            else:
                assert (job["Partition"], job["JOB_GRES"]) == ("cpu", "(null)"), job
                assert "TresPerJob" not in job, job
            assert job["JobName"] in runs.killed.log + runs.rerun.log  # this test's runs (SLURM run ID)


def test_results_equal_local_run(runs, default_run):
    """The SLURM run (another workdir, one job cancelled and rerun) and the session's local
    run of the same config and seed: every recorded output has the same sha256 (tables,
    arrays, figures, checkpoints), except the wall-time columns of :data:`NONDETERMINISTIC`.
    This is the suite's check that two runs give the same results."""
    assert (default_run / "results/tables/table2.csv").is_file()
    assert_same_recorded_outputs(default_run, runs.rerun.workdir)


def test_slurm_profile_gives_the_gpu_rules_a_gpu(tmp_path):
    """On the cluster the GPU rules request a GPU (the rules' own `gpu`, training.device auto)."""
    profile = "slurm"
    resources = dry_run_resources(tmp_path, "--profile", str(REPO / "profiles" / profile))
    assert GPU_RULES <= set(resources), sorted(resources)
    for rule, res in resources.items():
        if rule == "all":
            continue
        gpu_rule = rule in GPU_RULES
        assert res.get("gpu") == ("1" if gpu_rule else None), (rule, res)
        if profile == "slurm":
            assert res["slurm_partition"] == ("gpu" if gpu_rule else "cpu"), (rule, res)
            assert int(res["mem_mb"]) >= 2000 and int(res["runtime"]) >= 30, (rule, res)
