"""A real single-node SLURM cluster for the tests (Debian's slurm-wlm and munge packages).

``slurm_cluster`` (session fixture) installs the packages when ``slurmctld`` is missing
(root and apt-get needed, else the tests using it are skipped with the reason), writes
``/etc/slurm/slurm.conf`` and ``gres.conf`` (the plugin's job steps drop ``SLURM_CONF``, so
the configuration must be at its default place), starts munged, slurmctld and slurmd in the
foreground as child processes and, at the end of the session, stops exactly those by pid and
removes the configuration it wrote.

The node has the machine's CPUs, 20000 MB of memory (not enforced: no cgroups) and one GPU
whose device file is /dev/null, so that GPU requests are scheduled like on a real cluster
while the jobs themselves run on the CPU. Partitions: ``cpu`` (default) and ``gpu``.
Accounting is off: ``sacct`` fails, so runs must use ``--slurm-status-command squeue``
(MinJobAge is one hour, so finished jobs stay visible to ``squeue`` and ``scontrol``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ensure_debian_packages

SLURM_ETC = Path("/etc/slurm")
MUNGE_SOCKET_DIR = Path("/run/munge")
MARKER = "# written by temvirus tests/slurm_cluster.py"
PACKAGES = ["slurm-wlm", "munge"]
PROGRAMS = ["munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo"]

SLURM_CONF = """{marker}
ClusterName=temvirus-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
MinJobAge=3600
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=20000 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
"""

GRES_CONF = """{marker}
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
"""


def program(name: str) -> str | None:
    """Path of a SLURM or munge program (daemons are in /usr/sbin, which PATH may lack)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def run(cmd: list[str], timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    """Run a command with a hard timeout, capturing its text output."""
    return subprocess.run(
        [program(cmd[0]) or cmd[0], *cmd[1:]], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def ensure_installed() -> None:
    """Install slurm-wlm and munge with apt-get when missing; skip the test when impossible."""
    ensure_debian_packages("SLURM", PACKAGES, PROGRAMS, program)


@dataclass
class SlurmCluster:
    """The running test cluster: its state folder and the daemons this session started."""

    state: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self) -> None:
        if any(
            (SLURM_ETC / name).exists() and MARKER not in (SLURM_ETC / name).read_text()
            for name in ("slurm.conf", "gres.conf")
        ):
            pytest.skip(f"{SLURM_ETC} holds a SLURM configuration not written by the tests; not touching it")
        for name in ("slurmctld", "slurmd", "slurmstepd", "munged"):
            if run(["pgrep", "-x", name]).returncode == 0:
                pytest.skip(f"a {name} not started by this test session is running; not starting a test cluster")
        for sub in ("ctld", "spool", "munge"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        SLURM_ETC.mkdir(parents=True, exist_ok=True)
        (SLURM_ETC / "slurm.conf").write_text(SLURM_CONF.format(marker=MARKER, state=self.state, cpus=os.cpu_count()))
        (SLURM_ETC / "gres.conf").write_text(GRES_CONF.format(marker=MARKER))

        key = self.state / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        (self.state / "munge").chmod(0o700)
        MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        munge = self.state / "munge"
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--log-file={munge / 'munged.log'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
        )
        self._wait("munge", lambda: run(["munge", "-n"]).returncode == 0)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._wait("slurmctld", lambda: run(["scontrol", "ping"]).returncode == 0)
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost"])
        self._wait("idle node", lambda: set(run(["sinfo", "-h", "-N", "-o", "%T"]).stdout.split()) == {"idle"})

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.state / f"{name}.out", "w")
        self.processes[name] = subprocess.Popen(
            [program(cmd[0]), *cmd[1:]], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    @staticmethod
    def _wait_until(ready, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)
        return True

    def _wait(self, what: str, ready, timeout: float = 30) -> None:
        """Wait for ``ready()``; on a timeout or a daemon's exit, stop all and fail with the logs."""
        if (
            not self._wait_until(lambda: ready() or any(p.poll() is not None for p in self.processes.values()), timeout)
            or not ready()
        ):
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            self.stop()
            pytest.fail(
                f"test SLURM cluster: no {what} after {timeout} s "
                f"(exited: {dead}); logs in {self.state}:\n{self.logs()}"
            )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-1500:]}"
            for p in sorted(self.state.glob("*.out")) + sorted(self.state.glob("*.log"))
        )

    def stop(self) -> None:
        """Cancel the jobs left on the cluster, then stop the daemons this session started
        (by pid, last started first) and remove the configuration written for them."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            left = run(["squeue", "--noheader", "--format=%i"]).stdout.split()
            if left:
                run(["scancel", *left])
                self._wait_until(lambda: not run(["squeue", "--noheader"]).stdout.strip(), 15)
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.processes.clear()
        for name in ("slurm.conf", "gres.conf"):
            conf = SLURM_ETC / name
            if conf.exists() and MARKER in conf.read_text():
                conf.unlink()

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller knows (finished ones stay for MinJobAge), as key=value dicts."""
        out = run(["scontrol", "show", "job", "--details", "--oneliner"]).stdout
        return [
            dict(f.split("=", 1) for f in line.split() if "=" in f)
            for line in out.splitlines()
            if line.startswith("JobId=")
        ]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> SlurmCluster:
    """A running single-node SLURM cluster for this test session (stopped at its end)."""
    started = time.monotonic()
    ensure_installed()
    installed = time.monotonic()
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        print(
            f"test SLURM cluster: packages checked/installed in {installed - started:.1f} s, "
            f"daemons up in {time.monotonic() - installed:.1f} s"
        )
        yield cluster
    finally:
        cluster.stop()
