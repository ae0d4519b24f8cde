"""Reruns after a change: a definition edited in the library reruns its rules, and a change that leaves the
dataset as it was retrains nothing once the curation has run (docs/RUNNING.md, Changing a criterion)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import REPO, SMALL_DEMO, planned_rules, snakemake, write_config

from hftri_mimic.common.rule_code import imported_modules, library_files
from hftri_mimic.tools.bench.reruns import no_op_lookback_days, no_op_min_age


def copy_run(run: Path, workdir: Path, **overrides) -> Path:
    """A copy of a finished run with config values changed (``section__key=value``)."""
    shutil.copytree(run, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        config[section][key] = value
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def file_bytes(run: Path, *names: str) -> dict[str, bytes]:
    return {name: (run / "results" / name).read_bytes() for name in names}


# ----------------------------------------------------------------------------------------- code as rule inputs


def test_library_files_follow_imports_through_our_packages_only(tmp_path):
    package = tmp_path / "hftri_mimic"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("import numpy\nfrom hftri_mimic.sub import b\n")
    (package / "sub" / "b.py").write_text("from . import c\nfrom ..d import thing\n")
    (package / "sub" / "c.py").write_text("import os\n")
    (package / "d.py").write_text("def thing():\n    import hftri_mimic.e\n")
    (package / "e.py").write_text("")
    (package / "unused.py").write_text("")
    script = tmp_path / "script.py"
    script.write_text("from hftri_mimic.a import x\n")
    found = {str(p.relative_to(tmp_path)) for p in library_files(script, root=tmp_path)}
    assert found == {
        "hftri_mimic/__init__.py",
        "hftri_mimic/a.py",
        "hftri_mimic/sub/__init__.py",
        "hftri_mimic/sub/b.py",
        "hftri_mimic/sub/c.py",
        "hftri_mimic/d.py",
        "hftri_mimic/e.py",
    }
    assert "hftri_mimic.sub.c" in imported_modules(package / "sub" / "b.py", root=tmp_path)


def test_every_sql_concept_is_an_input_of_the_rule_that_runs_it():
    """Each concept file is named by a rule's `code=` input, and each rule that names one imports the module whose
    function reads it."""
    rules = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    named = set()
    for match in re.finditer(r"library_code\(\"[\w.]+\", sql=\[([^\]]*)\]\)", rules):
        named.update(re.findall(r"\"(\w+)\"", match.group(1)))
    concepts = {p.stem for p in (REPO / "hftri_mimic/sql").glob("*.sql")}
    assert named == concepts


def test_every_rule_with_a_script_lists_its_library_code():
    for path in (REPO / "workflow/rules").glob("*.smk"):
        blocks = re.split(r"^(?=(?:rule|checkpoint) )", path.read_text(), flags=re.MULTILINE)
        for block in blocks:
            script = re.search(r"script:\s+\"\.\./scripts/([\w.]+)\"", block)
            if script:
                assert f'code=library_code("{script.group(1)}"' in block, block.splitlines()[0]


CODE = ("Snakefile", "config.yaml", "workflow", "hftri_mimic", "models", "envs", "pyproject.toml")


@pytest.fixture(scope="module")
def own_repo_run(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the repository's code and a small demo run to the cohort made with it (jobs import the copy)."""
    root = tmp_path_factory.mktemp("own_repo")
    repo = root / "repo"
    for name in CODE:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            repo.mkdir(exist_ok=True)
            shutil.copy2(source, repo / name)
    workdir = root / "run"
    workdir.mkdir()
    write_config(workdir, demo=SMALL_DEMO)
    run_own(repo, workdir, "--cores", "2", "results/cohort/cohort.parquet")
    return repo, workdir


def run_own(repo: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir)]
    command += ["--configfile", str(workdir / "config.yaml"), *args]
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_editing_a_sql_concept_reruns_its_rule_and_what_follows(own_repo_run):
    repo, workdir = own_repo_run
    target = "results/cohort/cohort.parquet"
    assert planned_rules(run_own(repo, workdir, "-n", "--cores", "2", target)) == set()
    concept = repo / "hftri_mimic/sql/followup.sql"
    original = concept.read_text()
    concept.touch()  # a newer file with the same content reruns nothing: Snakemake compares its checksum
    assert planned_rules(run_own(repo, workdir, "-n", "--cores", "2", target)) == set()
    concept.write_text(original + "-- edited\n")
    try:
        assert planned_rules(run_own(repo, workdir, "-n", "--cores", "2", target)) == {"followup", "cohort"}
        edited = repo / "hftri_mimic/cohort/concepts.py"
        edited_text = edited.read_text()
        edited.write_text(edited_text + "\n# edited\n")
        plan = planned_rules(run_own(repo, workdir, "-n", "--cores", "2", target))
        assert plan == {
            "lab_admissions", "ecg_admissions", "echo_admissions", "index_admissions", "hf_admissions",
            "prevalent_hf", "followup", "cohort",
        }  # fmt: skip
        edited.write_text(edited_text)
    finally:
        concept.write_text(original)


# ------------------------------------------------------------------------------------ stopping where unchanged
# Snakemake decides within one invocation which jobs run before any runs: everything after a job that will run is
# planned too, even when that job then writes the same bytes. In a second invocation it compares the checksum of an
# input that is newer than its outputs with the one recorded when they were made, and reruns nothing if they agree.
# Hence the documented order after a criterion change: `snakemake dataset` (curation, minutes), then `snakemake all`,
# which reruns training only where the dataset changed.


@pytest.mark.slow
def test_a_label_criterion_that_moves_no_patient_retrains_nothing(trained_run, tmp_path):
    """Prevalent HF looked back over 300 years instead of the whole record: the same labels. The curation reruns;
    afterwards `snakemake -n all` plans nothing. (The age bound of docs/RUNNING.md is the same case, but this run
    has patients aged 17 and 18, so no other bound leaves its cohort as it is; bench.reruns measures it on runs
    where one exists.)"""
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["labels"]["prevalent_lookback_days"] is None
    workdir = copy_run(trained_run, tmp_path / "copy", labels__prevalent_lookback_days=300 * 365)
    unchanged = ("cohort/cohort.parquet", "hftri/manifest.parquet", "hftri/splits.parquet")
    before = file_bytes(workdir, *unchanged)
    assert {"prevalent_hf", "followup", "cohort", "manifest", "splits"} <= planned_rules(
        snakemake(workdir, "-n", "--cores", "2", "dataset")
    )
    snakemake(workdir, "--cores", "2", "dataset")
    assert file_bytes(workdir, *unchanged) == before
    assert planned_rules(snakemake(workdir, "-n", "--cores", "2", "all")) == set()


@pytest.mark.slow
def test_an_ecg_threshold_that_changes_no_kept_record_retrains_nothing(trained_run, tmp_path):
    index = pl.read_parquet(trained_run / "results/ecg/index.parquet")
    excluded = pl.read_parquet(trained_run / "results/ecg/exclusions.parquet")
    assert "flat_lead" not in excluded["reason"].to_list(), "pick another no-op threshold: the run has flat leads"
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    # no record was excluded for a flat lead, so a lower flat-lead threshold keeps every record where it was
    workdir = copy_run(trained_run, tmp_path / "copy", ecg__flat_std_mv=config["ecg"]["flat_std_mv"] / 10)
    snakemake(workdir, "--cores", "2", "dataset")
    assert pl.read_parquet(workdir / "results/ecg/index.parquet").equals(index)
    assert planned_rules(snakemake(workdir, "-n", "--cores", "2", "all")) == set()


def planned_jobs(proc: subprocess.CompletedProcess) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists ('' for a job without wildcards)."""
    jobs, rule = set(), None
    for line in (proc.stdout + proc.stderr).splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            if rule:
                jobs.add((rule, ""))
            rule = match.group(1)
        elif rule and (match := re.match(r"^\s+wildcards: (.*)$", line)):
            jobs.add((rule, match.group(1)))
            rule = None
        elif rule and not line.strip():
            jobs.add((rule, ""))
            rule = None
    return jobs


@pytest.mark.slow
def test_a_followup_criterion_retrains_prognosis_only(trained_run, tmp_path):
    """The follow-up bound changes who has follow-up, not the diagnosis labels or splits: after `snakemake dataset`,
    `snakemake all` retrains the prognosis models and nothing of diagnosis, retrieval or the encoder features."""
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    workdir = copy_run(
        trained_run, tmp_path / "copy", labels__followup_min_days=2 * config["labels"]["followup_min_days"]
    )
    views = ("train/data/inputs.parquet", "train/data/diagnosis.parquet", "train/data/prognosis.parquet")
    before = file_bytes(workdir, *views)
    snakemake(workdir, "--cores", "2", "dataset")
    after = file_bytes(workdir, *views)
    assert after["train/data/prognosis.parquet"] != before["train/data/prognosis.parquet"], (
        "the follow-up change moved no patient here: pick a larger bound"
    )
    assert {name: after[name] for name in views[:2]} == {name: before[name] for name in views[:2]}
    jobs = planned_jobs(snakemake(workdir, "-n", "--cores", "2", "all"))
    trained = {wildcards for rule, wildcards in jobs if rule == "train_model"}
    assert trained and all(w.startswith("task=prognosis") for w in trained), trained
    assert not {rule for rule, _ in jobs} & {"encoder_features", "train_retrieval", "evaluate_diagnosis"}
    assert "evaluate_prognosis" in {rule for rule, _ in jobs}


def test_the_benchmarks_no_op_age_bound_has_no_admission_between():
    def ages(*values: int | None) -> pl.DataFrame:
        return pl.DataFrame({"age": list(values)}, schema={"age": pl.Int64})

    assert no_op_min_age(ages(17, 20, 30, None), 18) == 20
    assert no_op_min_age(ages(18, 30), 18) == 17
    assert no_op_min_age(ages(12, 18, 40), 18) == 13
    with pytest.raises(ValueError, match="no age bound"):
        no_op_min_age(ages(17, 18), 18)


def test_the_benchmarks_no_op_lookback_reaches_every_earlier_admission():
    day, start = timedelta(days=1), datetime(2150, 1, 1)
    admissions = pl.DataFrame(
        {
            "subject_id": [1, 1, 1, 2, 3, None],
            "admittime": [start, start + 40 * day, start + 400 * day, start, None, None],
        }
    )
    assert no_op_lookback_days(admissions) == 401  # subject 1 spans 400 days; one more keeps them all
