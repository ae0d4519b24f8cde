"""The cluster profile on a real SLURM (docs/RUNNING.md, On a SLURM cluster): `snakemake --workflow-profile
workflow/profiles/slurm` with snakemake-executor-plugin-slurm runs the small demo through `dataset` and a training
job on a single-node SLURM 22.05 (tests/slurm_cluster.py), is killed with SIGKILL midway, resumes, and ends with a
local run's outputs. Every job ran as a SLURM job, and SLURM recorded each rule's threads, mem_mb, runtime and gpu.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, SMALL_DEMO, base_config, content_hashes, snakemake, snakemake_command, write_config
from slurm_cluster import SlurmCluster, minutes, missing_tools

pytestmark = pytest.mark.slow

PROFILE = REPO / "workflow/profiles/slurm"
TRAINED = "results/eval/predictions/diagnosis/lab.parquet"
TARGETS = ("dataset", TRAINED)
# A short schedule: the point is that a training job runs on the cluster with its GPU request, not the model.
SHORT_TRAINING = {
    **base_config()["train"],
    "optim": {
        **base_config()["train"]["optim"],
        "epochs": 2,
        "patience": 1,
        "scheduler_patience": 1,
        "batch_size": 16,
        "ensemble": {"diagnosis": 1, "prognosis": 1},
    },
}
# The plugin waits 40 s before its first status check of a new job; the demo's jobs take seconds.
FAST_STATUS = ("--slurm-init-seconds-before-status-checks", "2")

JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
SUBMITTED = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if missing := missing_tools():
        pytest.skip(f"a SLURM test cluster needs {', '.join(missing)} (.ci/run installs the Debian packages)")
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def slurm_command(workdir: Path, profile: Path, *args: str) -> list[str]:
    return snakemake_command(workdir, "--workflow-profile", str(profile), *FAST_STATUS, *args)


def run_on_cluster(
    cluster: SlurmCluster, workdir: Path, *args: str, profile: Path = PROFILE, log_name: str, check: bool = True
) -> str:
    """Run Snakemake with the profile in ``workdir``; its whole output, also kept as ``log_name``."""
    env = {**cluster.env, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        slurm_command(workdir, profile, *args),
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        umask=0o002,
    )
    output = proc.stdout + proc.stderr
    (workdir / log_name).write_text(output)
    if check:
        assert proc.returncode == 0, f"snakemake with the SLURM profile failed ({proc.returncode}):\n{output[-6000:]}"
    return output


def kill_midway(cluster: SlurmCluster, workdir: Path, marker: str) -> str:
    """Start the profile's run, SIGKILL Snakemake once ``marker`` exists (jobs still queued), and return its log."""
    log_path = workdir / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            slurm_command(workdir, PROFILE, *TARGETS),
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**cluster.env, "HF_HUB_OFFLINE": "1"},
            start_new_session=True,
            umask=0o002,
        )
        deadline = time.monotonic() + 900
        while not (workdir / marker).exists():
            assert proc.poll() is None, f"the run ended before {marker} appeared:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"{marker} did not appear within 900 s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return log_path.read_text()


def job_blocks(log: str) -> dict[str, dict]:
    """The jobs a Snakemake log announces, by its job id: rule, wildcards, threads and resources as Snakemake
    resolved them (the lines under `rule NAME:`)."""
    jobs, current = {}, None
    for line in log.splitlines():
        if header := JOB_HEADER.match(line.strip()):
            current = {"rule": header[1], "wildcards": "", "local": line.strip().startswith("local")}
            continue
        if current is None:
            continue
        key, _, value = line.strip().partition(": ")
        if key in ("jobid", "wildcards", "threads", "resources"):
            current[key] = value
        if key == "jobid":
            jobs[value] = current
        if not line.strip():
            current = None
    return jobs


def declared(block: dict) -> dict:
    """threads, mem_mb, runtime (minutes) and gpu of a job block."""
    resources = dict(item.split("=", 1) for item in block["resources"].split(", ") if "=" in item)
    return {
        "threads": int(block.get("threads", 1)),  # Snakemake prints threads above 1 only
        "mem_mb": int(resources["mem_mb"]),
        "runtime": int(resources["runtime"]),
        "gpu": int(resources.get("gpu", 0)),
    }


def submissions(log: str) -> dict[str, dict]:
    """{SLURM job id: the job block Snakemake submitted as it}."""
    blocks = job_blocks(log)
    found = {}
    for line in log.splitlines():
        if match := SUBMITTED.match(line.strip()):
            found[match[2]] = blocks[match[1]]
    return found


def recorded(record: dict[str, str]) -> dict:
    """What SLURM gave a job, in the units the rules declare."""
    gpus = re.search(r"gres:gpu:(\d+)", record.get("TresPerJob", ""))
    return {
        "threads": int(record["NumCPUs"]),
        "mem_mb": int(record["MinMemoryNode"].removesuffix("M")),
        "runtime": minutes(record["TimeLimit"]),
        "gpu": int(gpus[1]) if gpus else 0,
    }


def resource_mismatches(
    workflow_jobs: dict[tuple, dict], submitted: dict[str, dict], records: dict[str, dict]
) -> list[str]:
    """Each SLURM job whose recorded CPUs, memory, time limit or GPUs differ from what its rule declares."""
    problems = []
    for slurm_id, block in submitted.items():
        key = (block["rule"], block["wildcards"])
        wanted = workflow_jobs[key]
        got = recorded(records[slurm_id])
        if got != wanted:
            problems.append(f"{key}: the workflow declares {wanted}, SLURM job {slurm_id} got {got}")
    return problems


def workflow_declarations(workdir: Path, *targets: str) -> dict[tuple, dict]:
    """{(rule, wildcards): declared resources} for every job of ``targets``, from local dry runs with the default
    profile: what the rules themselves ask for, whatever the SLURM profile does. A forced checkpoint hides the jobs
    it fans out to (its plan is to be remade), so the shard jobs come from a second dry run that forces only them."""
    declarations = {}
    for force in (["--forceall"], ["--forcerun", "ecg_shard", "echo_shard"]):
        proc = snakemake(
            workdir, *force, "--cores", "2", "--dry-run", *targets
        )  # after a flag: --forcerun takes a list
        # Target rules such as `dataset` run nothing and ask for nothing (no mem_mb): they are not submitted.
        declarations |= {
            (b["rule"], b["wildcards"]): declared(b)
            for b in job_blocks(proc.stdout + proc.stderr).values()
            if "mem_mb=" in b.get("resources", "")
        }
    return declarations


def test_the_slurm_profile_runs_resumes_and_gives_every_job_its_resources(cluster, demo_run, tmp_path):
    workdir = tmp_path / "cluster_run"
    workdir.mkdir()
    write_config(workdir, demo=SMALL_DEMO, train=SHORT_TRAINING)

    killed_log = kill_midway(cluster, workdir, "results/ecg/shards")
    run_id = re.search(r"SLURM run ID: ([0-9a-f-]+)", killed_log)[1]
    assert submissions(killed_log), "the killed run must have submitted jobs"
    # The user's recovery (docs/RUNNING.md): cancel the dead run's jobs, release the lock, rerun the same command.
    cluster.cancel_run(run_id)
    snakemake(workdir, "--unlock")
    resumed_log = run_on_cluster(cluster, workdir, *TARGETS, log_name="resumed.log")
    assert cluster.queued() == [], "no job may be left in the queue"

    # Outputs equal a local run's: the dataset (the shared demo_run fixture) and the training job (run here).
    for folder in ("cohort", "ecg", "echo", "hftri"):
        on_cluster = content_hashes(workdir / "results" / folder)
        assert on_cluster and on_cluster == content_hashes(demo_run / "results" / folder), f"{folder} differs"
    local = tmp_path / "local_training"
    shutil.copytree(workdir / "results", local / "results")
    shutil.copy(workdir / "config.yaml", local / "config.yaml")
    for output in (TRAINED, "results/train/diagnosis/lab/summary.json"):
        (local / output).unlink()
    trained_locally = snakemake(local, "--cores", "2", TRAINED)
    assert "train_model" in trained_locally.stdout + trained_locally.stderr
    assert content_hashes(local / "results/eval") == content_hashes(workdir / "results/eval")

    # Every job ran as a SLURM job, with the threads, memory, time and GPUs its rule declares.
    workflow_jobs = workflow_declarations(workdir, *TARGETS)
    submitted = submissions(killed_log) | submissions(resumed_log)
    ran_on_slurm = {(b["rule"], b["wildcards"]) for b in submitted.values()}
    assert set(workflow_jobs) <= ran_on_slurm, f"jobs not run on SLURM: {sorted(set(workflow_jobs) - ran_on_slurm)}"
    # Only action-less target rules (`dataset`) may show as local jobs: nothing of theirs runs.
    ran_locally = [b for b in job_blocks(killed_log + resumed_log).values() if b["local"]]
    assert not [b for b in ran_locally if (b["rule"], b["wildcards"]) in workflow_jobs], "no job may run locally"
    records = cluster.jobs()
    assert set(submitted) <= set(records), "SLURM must know every job Snakemake submitted"
    assert not resource_mismatches(workflow_jobs, submitted, records)
    assert {"train_model", "encoder_features"} <= {b["rule"] for b in submitted.values()}
    gpu_jobs = [sid for sid, b in submitted.items() if b["rule"] in ("train_model", "encoder_features")]
    assert all(recorded(records[sid])["gpu"] == 1 for sid in gpu_jobs), "training jobs must ask SLURM for a GPU"
    states = {records[sid]["JobState"] for sid in submissions(resumed_log)}
    assert states == {"COMPLETED"}, f"the resumed run's jobs ended as {states}"
    assert all(records[sid]["Comment"].startswith(f"rule_{b['rule']}") for sid, b in submitted.items())


def test_a_profile_error_fails_instead_of_running_elsewhere(cluster, tmp_path):
    """A misspelt option stops Snakemake before any job; a profile that changes what a rule asks for is caught by
    the comparison the main test makes."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, demo=SMALL_DEMO)

    misspelt = tmp_path / "misspelt"
    shutil.copytree(PROFILE, misspelt)
    text = (misspelt / "config.yaml").read_text()
    (misspelt / "config.yaml").write_text(text.replace("executor: slurm", "executer: slurm"))
    output = run_on_cluster(cluster, workdir, "demo_source", profile=misspelt, log_name="misspelt.log", check=False)
    assert "unrecognized arguments: --executer" in output
    assert not (workdir / "results").exists(), "nothing may run, locally or on the cluster"

    overriding = tmp_path / "overriding"
    shutil.copytree(PROFILE, overriding)
    with open(overriding / "config.yaml", "a") as profile:
        profile.write("set-resources:\n  demo_source:\n    mem_mb: 1234\n")
    log = run_on_cluster(cluster, workdir, "demo_source", profile=overriding, log_name="overriding.log")
    submitted = submissions(log)
    assert [b["rule"] for b in submitted.values()] == ["demo_source"]
    problems = resource_mismatches(workflow_declarations(workdir, "demo_source"), submitted, cluster.jobs())
    assert len(problems) == 1 and "'mem_mb': 1234" in problems[0]
