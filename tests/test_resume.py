"""Resumption (docs/RUNNING.md, Resuming a killed run): `snakemake all` killed with SIGKILL at several points resumes
and ends with the same outputs as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SMALL_DEMO, content_hashes, snakemake, snakemake_command, write_config

# Kill points: while ingesting, while the ECG shards are written, while the echo shards are written.
KILL_WHEN = ("results/parquet/labevents.parquet", "results/ecg/shards", "results/echo/shards")


def run_until(workdir: Path, marker: str, timeout: float = 600) -> bool:
    """Start `snakemake all` and SIGKILL its whole process group once ``marker`` exists; False if the run
    ended first (its output is in run_<marker>.log)."""
    # A SIGKILLed Snakemake leaves its directory lock behind; releasing it is the documented first step.
    subprocess.run(snakemake_command(workdir, "--unlock"), cwd=workdir, capture_output=True, check=True)
    with open(workdir / f"run_{marker.replace('/', '_')}.log", "w") as log:
        proc = subprocess.Popen(
            snakemake_command(workdir, "--cores", "2", "--rerun-incomplete", "dataset"),
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (workdir / marker).exists():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"{marker} did not appear within {timeout} s")


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_outputs(demo_run, tmp_path):
    write_config(tmp_path, demo=SMALL_DEMO)
    kills = [run_until(tmp_path, marker) for marker in KILL_WHEN]
    assert all(kills), f"every kill must hit a running workflow: {kills}"
    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", "dataset")
    for folder in ("cohort", "ecg", "echo", "hftri"):
        resumed = content_hashes(tmp_path / "results" / folder)
        assert resumed and resumed == content_hashes(demo_run / "results" / folder), f"{folder} differs after resume"
    assert not list((tmp_path / "results").rglob("*.tmp")), "no temporary file may survive a finished run"
