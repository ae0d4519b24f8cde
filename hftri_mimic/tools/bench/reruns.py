"""Benchmark of reruns after a criterion change (run on demand, not a test).

    python -m hftri_mimic.tools.bench.reruns RUN_DIR --cores 2 [--changes followup_window no_op_age ...]

``RUN_DIR`` is a finished workflow directory (``config.yaml`` and ``results/`` after ``snakemake all``). For each
change the benchmark copies it (raw source files, signal stores and the feature cache hard-linked: the workflow
replaces them, never writes into them), edits ``config.yaml`` and measures, each in a fresh process:

- one pass: the jobs ``snakemake -n all`` plans, by rule;
- curation first (docs/RUNNING.md, Changing a criterion): ``snakemake dataset``, then ``snakemake all``; the jobs
  each runs by rule, its wall time and its job time (the ``s`` column of the benchmark files it wrote).

It prints one block per change and a summary line against the full run's job time (the sum over its benchmark
files).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[3]
EXECUTED = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):", re.MULTILINE)
PLANNED_ROW = re.compile(r"^(\w+)\s+(\d+)$")
LINKED = ("source", "ecg", "echo", "cache")  # large, replaced (never rewritten in place) by the jobs


def no_op_min_age(eligibility: pl.DataFrame, current: int) -> int:
    """Another age bound that keeps every admission's eligibility (no admission aged between the two)."""
    ages = eligibility["age"].drop_nulls()
    above = ages.filter(ages >= current)
    below = ages.filter(ages < current)
    if above.len() and above.min() > current:
        return int(above.min())
    if below.len() and below.max() < current - 1:
        return int(below.max()) + 1
    if not below.len():
        return current - 1
    raise ValueError(f"patients are aged both {current} and {current - 1}: no age bound leaves the cohort as it is")


def no_op_lookback_days(eligibility: pl.DataFrame) -> int:
    """A prevalent-HF lookback longer than any patient's span of admissions: every earlier admission still counts."""
    spans = (
        eligibility.drop_nulls("admittime")
        .group_by("subject_id")
        .agg(span=(pl.col("admittime").max() - pl.col("admittime").min()).dt.total_days())
    )
    return int(spans["span"].max() or 0) + 1


def criterion_changes(run: Path) -> dict[str, dict | str]:
    """The measured changes: config section -> {key: new value}, or why the change cannot be made on this run."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    eligibility = pl.read_parquet(run / config["out_dir"] / "cohort/eligibility.parquet")
    try:
        no_op_age: dict | str = {"cohort": {"min_age": no_op_min_age(eligibility, config["cohort"]["min_age"])}}
    except ValueError as err:
        no_op_age = str(err)
    lookback = config["labels"]["prevalent_lookback_days"]
    return {
        "followup_window": {"labels": {"followup_min_days": 2 * config["labels"]["followup_min_days"]}},
        "no_op_age": no_op_age,
        # null (any earlier admission) -> a bound no patient's admissions reach: a label criterion that moves no one
        "no_op_lookback": {"labels": {"prevalent_lookback_days": no_op_lookback_days(eligibility)}}
        if lookback is None
        else f"labels.prevalent_lookback_days is {lookback}, not null",
        "ecg_clip_fraction": {"ecg": {"clip_fraction": 2 * config["ecg"]["clip_fraction"]}},
        "echo_mask_min_std": {"echo": {"mask_min_std": config["echo"]["mask_min_std"] + 1.0}},
        "lab_items": {"cohort": {"lab_itemids": config["cohort"]["lab_itemids"][:-1]}},
    }


def copy_run(run: Path, out_dir: str, dest: Path) -> None:
    results = run / out_dir
    shutil.copytree(run, dest, symlinks=True, ignore=lambda folder, names: names if Path(folder) == results else [])
    for name in os.listdir(results):
        source = results / name
        target = dest / out_dir / name
        if name in LINKED and source.is_dir():
            shutil.copytree(source, target, symlinks=True, copy_function=os.link)
        elif source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    command += ["--configfile", str(workdir / "config.yaml"), *args]
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env={**os.environ})
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {workdir}:\n{proc.stderr[-3000:]}")
    return proc


def planned(proc: subprocess.CompletedProcess) -> Counter:
    """Jobs by rule in a dry run's 'Job stats' table."""
    counts: Counter = Counter()
    in_table = False
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
        elif in_table and line.startswith("total"):
            break
        elif in_table and (row := PLANNED_ROW.match(line.strip())):
            counts[row.group(1)] += int(row.group(2))
    return counts


def job_seconds(results: Path, since: float = 0.0) -> float:
    """Sum of the ``s`` column of the benchmark files written after ``since``."""
    total = 0.0
    for path in (results / "benchmarks").rglob("*.tsv"):
        if path.stat().st_mtime >= since:
            total += float(pl.read_csv(path, separator="\t")["s"].sum())
    return total


def timed_pass(workdir: Path, results: Path, target: str, cores: int) -> tuple[Counter, float, float]:
    start = time.time()
    proc = snakemake(workdir, "--cores", str(cores), target)
    wall = time.time() - start
    return Counter(EXECUTED.findall(proc.stdout + proc.stderr)), wall, job_seconds(results, start)


TARGETS = ("all", "dataset")  # target rules: no work of their own, not counted as jobs


def jobs_only(counts: Counter) -> Counter:
    return Counter({rule: n for rule, n in counts.items() if rule not in TARGETS})


def by_rule(counts: Counter) -> str:
    return ", ".join(f"{rule} {n}" for rule, n in sorted(jobs_only(counts).items())) or "nothing"


def measure(run: Path, name: str, change: dict, cores: int, scratch: Path) -> dict:
    config = yaml.safe_load((run / "config.yaml").read_text())
    workdir = scratch / name
    copy_run(run, config["out_dir"], workdir)
    for section, values in change.items():
        config[section].update(values)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    results = workdir / config["out_dir"]
    one_pass = planned(snakemake(workdir, "-n", "--cores", str(cores), "all"))
    curation, curation_wall, curation_s = timed_pass(workdir, results, "dataset", cores)
    rest, rest_wall, rest_s = timed_pass(workdir, results, "all", cores)
    shutil.rmtree(workdir)
    return {
        "one_pass": one_pass,
        "curation": curation,
        "rest": rest,
        "wall_s": curation_wall + rest_wall,
        "job_s": curation_s + rest_s,
        "curation_wall_s": curation_wall,
        "rest_wall_s": rest_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished workflow directory (config.yaml, results/)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--changes", nargs="*", help="names of the changes to measure (default: all)")
    parser.add_argument("--scratch", type=Path, default=None, help="where the copies go (default: a temp folder)")
    args = parser.parse_args()
    run = args.run.resolve()
    config = yaml.safe_load((run / "config.yaml").read_text())
    full_s = job_seconds(run / config["out_dir"])
    changes = criterion_changes(run)
    names = args.changes or list(changes)
    print(f"full run: {full_s:.0f} job-seconds ({run})")
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        for name in names:
            if isinstance(changes[name], str):
                print(f"\n{name}: not measured on this run ({changes[name]})")
                continue
            result = measure(run, name, changes[name], args.cores, Path(scratch))
            print(f"\n{name}: {changes[name]}")
            print(f"  one pass, planned ({jobs_only(result['one_pass']).total()} jobs): {by_rule(result['one_pass'])}")
            print(f"  dataset ({result['curation_wall_s']:.0f} s):  {by_rule(result['curation'])}")
            print(f"  then all ({result['rest_wall_s']:.0f} s): {by_rule(result['rest'])}")
            print(
                f"  {name}: {(jobs_only(result['curation']) + jobs_only(result['rest'])).total()} jobs, "
                f"{result['wall_s']:.0f} s wall, {result['job_s']:.0f} job-seconds = "
                f"{100 * result['job_s'] / max(full_s, 1e-9):.1f}% of the full run"
            )


if __name__ == "__main__":
    main()
