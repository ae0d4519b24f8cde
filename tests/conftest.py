"""Shared paths and helpers for the tests: small workflow runs (real reference data: reference_data.py)."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from hftri_mimic.common.numerics import use_portable_cpu_numerics

# Before anything imports torch: the tests' own process computes with the kernels the workflow's jobs use (AVX2 on
# x86-64, hftri_mimic/common/numerics.py), so a model trained in a test equals one trained by a job to the last bit.
use_portable_cpu_numerics()

import polars as pl  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from reference_data import mimic_demo_hosp  # noqa: E402
from snakemake.utils import update_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# A small demo that still exercises every branch of the cohort (a minute end to end on 2 cores).
SMALL_DEMO = {"n_patients": 60, "echo_height": 64, "echo_width": 80, "echo_frames": [4, 8]}


def base_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def write_config(workdir: Path, **overrides) -> Path:
    """config.yaml for a run in ``workdir``: the repo's defaults with nested overrides merged."""
    config = base_config()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The command line that runs the repo's Snakefile in ``workdir`` (which holds config.yaml)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the repo's Snakefile in ``workdir`` and return the finished process.

    It starts with the loosest common umask (002, files readable by everyone) so that the tests see the modes the
    workflow sets itself, not the tester's."""
    cmd = snakemake_command(workdir, *args)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env, umask=0o002)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def planned_rules(proc: subprocess.CompletedProcess) -> set[str]:
    """Rule names in the 'Job stats' table of a dry run."""
    lines = (proc.stdout + proc.stderr).splitlines()
    rules: set[str] = set()
    in_table = False
    for line in lines:
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0].startswith("-"):
                continue
            if parts[0] == "total":
                break
            rules.add(parts[0])
    return rules


def content_hashes(root: Path) -> dict[str, str]:
    """Hashes of the data in every Parquet file and Zarr chunk of a run's dataset outputs.

    Snakemake's own `.snakemake_timestamp` marker in directory outputs is bookkeeping, not data: a run killed
    between a job's last write and Snakemake touching the marker resumes without it."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.name == ".snakemake_timestamp":
            continue
        if path.suffix == ".parquet":
            hashes[rel] = hashlib.sha256(pl.read_parquet(path).write_ipc(None).getvalue()).hexdigest()
        elif ".zarr/" in rel and path.is_file() and "zarr.json" not in path.name:
            hashes[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One small demo workflow run to completion; tests read its outputs and must not modify them."""
    workdir = tmp_path_factory.mktemp("demo_run")
    write_config(workdir, demo=SMALL_DEMO)
    snakemake(workdir, "--cores", "2", "dataset")
    return workdir


@pytest.fixture(scope="session")
def mimic_run(tmp_path_factory) -> Path:
    """The workflow on the real MIMIC-IV demo hosp tables only (labs required, no ECG/echo roots)."""
    workdir = tmp_path_factory.mktemp("mimic_run")
    write_config(
        workdir,
        source={
            "kind": "mimic",
            "hosp_root": str(mimic_demo_hosp()),
            "ecg_root": None,
            "echo_root": None,
        },
        cohort={"require_modalities": ["lab"]},
    )
    snakemake(workdir, "--cores", "2", "dataset")
    return workdir


# The small trained run shared by the training, evaluation and compare tests: `all` on 110 demo patients with a
# short training schedule, as .test/config.yaml lays it over config.yaml (a person runs the same with
# `snakemake --cores 2 --configfile .test/config.yaml all`). Its out_dir is the person's; a test's is workdir/results.
TEST_OVERLAY = {k: v for k, v in yaml.safe_load((REPO / ".test/config.yaml").read_text()).items() if k != "out_dir"}
TRAIN_DEMO = {**base_config()["demo"], **TEST_OVERLAY["demo"]}


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it by Snakemake's own merge of a later --configfile (neither changed)."""
    merged = copy.deepcopy(base)
    update_config(merged, copy.deepcopy(overrides))
    return merged


def write_train_config(workdir: Path, **overrides) -> Path:
    trained = deep_merge(base_config(), TEST_OVERLAY)
    return write_config(workdir, **({key: trained[key] for key in TEST_OVERLAY} | overrides))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("trained_run")
    write_train_config(workdir)
    snakemake(workdir, "--cores", "2", "all", timeout=1800)
    return workdir


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``HFTRI_NO_SKIPS=1`` (set by .ci/run) a skipped test fails the run: CI skips nothing."""
    if os.environ.get("HFTRI_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == pytest.ExitCode.OK:
        reporter.write_line(f"HFTRI_NO_SKIPS=1: {len(skipped)} test(s) skipped, failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
