"""A real single-node SLURM cluster on localhost for the tests (tests/test_slurm.py).

Debian's slurmctld, slurmd, slurm-client and munge (SLURM 22.05; `.ci/run` installs them) started as root in a
folder of their own: munged on the standard socket (an answering one is reused), a controller whose state, logs and
ports are the folder's, and one node that takes its configuration from the controller ("configless"), as many
clusters do. Configless matters: the executor's job step strips SLURM_CONF from the environment of its inner
`srun`, which then finds the configuration only where a node keeps it (/run/slurm/conf) or in /etc/slurm.

The node offers the machine's CPUs and memory and one GPU entry (a generic resource with no device behind it), so
that a job's `--gpus=1` can be scheduled and recorded; CUDA stays absent and training runs on the CPU. Finished
jobs stay known to the controller for a day (MinJobAge), so `squeue --states=all` answers for them and
`scontrol show jobs` shows what each job was given.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = (
    "munged",
    "mungekey",
    "munge",
    "unmunge",
    "runuser",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def missing_tools() -> list[str]:
    """The SLURM and munge programs this machine lacks, and 'root' when not run as root (slurmd must be)."""
    missing = [tool for tool in DAEMONS if shutil.which(tool) is None]
    return missing + ([] if os.geteuid() == 0 else ["root"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"SLURM test cluster: {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _munge_answers() -> bool:
    if not MUNGE_SOCKET.exists():
        return False
    encode = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
    decode = subprocess.run(["unmunge"], input=encode.stdout, capture_output=True, timeout=10)
    return encode.returncode == 0 and decode.returncode == 0


def _node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) as slurmd measures this machine."""
    measured = _run("slurmd", "-C").stdout
    cpus = int(re.search(r"\bCPUs=(\d+)", measured)[1])
    memory = int(re.search(r"\bRealMemory=(\d+)", measured)[1])
    return cpus, memory


def parse_job_records(text: str) -> dict[str, dict[str, str]]:
    """`scontrol show jobs -o` (one job per line of Key=Value fields) as {job id: {key: value}}. Values never hold
    spaces for the fields the tests read; the Command and WorkDir paths are the tests' own temporary folders."""
    records = {}
    for line in text.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


def minutes(limit: str) -> int:
    """A SLURM time limit ('D-HH:MM:SS', 'HH:MM:SS' or 'MM:SS') in whole minutes."""
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, mins, secs = parts
    return (int(days or 0) * 24 + hours) * 60 + mins + (1 if secs else 0)


class SlurmCluster:
    """Start with `with SlurmCluster(folder) as cluster:`; everything the cluster writes stays under ``folder``
    (besides munged's socket and the node's /run/slurm/conf link)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "etc/slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._started: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for sub in ("etc", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._start_munge()
        self._write_config()
        _run("slurmctld", "-f", str(self.conf), env=self.env)
        self._started.append("slurmctld")
        self._wait_for(lambda: _run("scontrol", "ping", env=self.env, check=False).stdout.count("UP") > 0, "slurmctld")
        _run("slurmd", "--conf-server", f"localhost:{self.ctld_port}", "-N", "localhost", env=self.env)
        self._started.append("slurmd")
        self._wait_for(self._node_idle, "the node")

    def stop(self) -> None:
        """Cancel every job, stop the daemons this cluster started, and wait until they are gone."""
        if "slurmctld" in self._started:
            _run("scancel", "--full", "--user", "root", env=self.env, check=False)
            _run("scontrol", "shutdown", env=self.env, check=False)
        for pid_file in ("slurmd.pid", "slurmctld.pid"):
            self._kill_pid_file(self.root / pid_file)
        if "munged" in self._started:
            _run("munged", "--stop", check=False)
            self._kill_pid_file(self.munge_dir / "munged.pid")
            shutil.rmtree(self.munge_dir, ignore_errors=True)
        self._started.clear()

    # -- what the cluster knows --------------------------------------------------------------------------------
    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job the controller knows, finished ones included (MinJobAge is a day)."""
        return parse_job_records(_run("scontrol", "show", "jobs", "-o", env=self.env).stdout)

    def queued(self) -> list[str]:
        """Ids of the jobs still pending or running."""
        out = _run(
            "squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,CONFIGURING,COMPLETING", env=self.env
        ).stdout
        return out.split()

    def cancel_run(self, run_id: str) -> None:
        """What a user does after killing Snakemake: cancel the run's jobs (named after its SLURM run ID)."""
        _run("scancel", "--name", run_id, env=self.env)
        self._wait_for(lambda: not self.queued(), "the cancelled jobs to leave the queue")

    # -- internals ---------------------------------------------------------------------------------------------
    def _start_munge(self) -> None:
        if _munge_answers():
            return  # the machine's own munged: every daemon here uses it, so keys agree
        # munged runs as the munge user, who cannot enter pytest's private temporary folders: its own folder in /tmp.
        self.munge_dir = Path(tempfile.mkdtemp(prefix="hftri-munge-"))
        key = self.munge_dir / "munge.key"
        _run("mungekey", "--create", "--keyfile", str(key))
        shutil.chown(key, "munge", "munge")
        shutil.chown(self.munge_dir, "munge", "munge")
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
        _run(
            "runuser",
            "-u",
            "munge",
            "--",
            "munged",
            "--force",
            f"--key-file={key}",
            f"--pid-file={self.munge_dir / 'munged.pid'}",
            f"--seed-file={self.munge_dir / 'seed'}",
            f"--log-file={self.munge_dir / 'munged.log'}",
        )
        self._started.append("munged")
        self._wait_for(_munge_answers, "munged")

    def _write_config(self) -> None:
        cpus, memory = _node_hardware()
        self.ctld_port, slurmd_port = _free_port(), _free_port()
        root = self.root
        settings = {
            "ClusterName": "hftri",
            "SlurmctldHost": "localhost",
            "SlurmctldPort": self.ctld_port,
            "SlurmdPort": slurmd_port,
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "SlurmctldParameters": "enable_configless",
            "StateSaveLocation": root / "state",
            "SlurmdSpoolDir": root / "spool",
            "SlurmctldPidFile": root / "slurmctld.pid",
            "SlurmdPidFile": root / "slurmd.pid",
            "SlurmctldLogFile": root / "log/slurmctld.log",
            "SlurmdLogFile": root / "log/slurmd.log",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/filetxt",  # one line per finished job, kept beside the logs
            "JobCompLoc": root / "log/jobcomp.txt",
            "JobAcctGatherType": "jobacct_gather/none",
            "MinJobAge": 86400,
            "MpiDefault": "none",
            "ReturnToService": 2,
            "GresTypes": "gpu",
            "SchedulerType": "sched/backfill",
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines.append(f"NodeName=localhost CPUs={cpus} RealMemory={memory} Gres=gpu:1 State=UNKNOWN")
        lines.append("PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        # A GPU entry needs a device file; /dev/null stands in (nothing opens it: CUDA is absent).
        (self.conf.parent / "gres.conf").write_text("NodeName=localhost Name=gpu File=/dev/null\n")

    def _node_idle(self) -> bool:
        state = _run("sinfo", "--noheader", "--format=%T", env=self.env, check=False).stdout.strip()
        return state == "idle"

    def _wait_for(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.5)
        logs = "\n".join(
            f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted((self.root / "log").glob("*.log"))
        )
        raise RuntimeError(f"SLURM test cluster: {what} not ready within {timeout} s\n{logs}")

    @staticmethod
    def _kill_pid_file(pid_file: Path, timeout: float = 30) -> None:
        if not pid_file.is_file():
            return
        try:
            pid = int(pid_file.read_text().split()[0])
        except (ValueError, IndexError):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
