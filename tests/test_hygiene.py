"""Data protection (docs/SECURITY.md): patient data stays in git-ignored outputs and never reaches logs or the repo."""

from __future__ import annotations

import re
import subprocess

import polars as pl
from conftest import REPO

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".dat", ".hea", ".dcm", ".zarr", ".npy", ".npz", ".pt", ".ckpt")


def tracked_files() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()


def test_no_tracked_file_looks_like_patient_data():
    suspicious = [f for f in tracked_files() if f.endswith(DATA_SUFFIXES) or ".zarr/" in f]
    assert not suspicious, f"data-like files are tracked: {suspicious}"
    for name in tracked_files():
        path = REPO / name
        if path.suffix in (".tsv", ".txt", ".json", ".md") and path.is_file():
            first = path.read_text(errors="ignore").splitlines()[:1]
            assert not (first and re.search(r"\bsubject_id\b", first[0]) and ("," in first[0] or "\t" in first[0])), (
                f"{name} has a table header with subject_id"
            )


def test_outputs_and_data_paths_are_git_ignored():
    for path in (
        "results/cohort/cohort.parquet",
        "resources/physionet/x.csv.gz",
        ".snakemake/log/x.log",
        "results/source/hosp/patients.csv.gz",
    ):
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert proc.returncode == 0, f"{path} is not ignored by .gitignore"


def test_logs_of_a_demo_run_name_no_patient(demo_run):
    cohort = pl.read_parquet(demo_run / "results/cohort/cohort.parquet")
    columns = ("subject_id", "hadm_id", "ecg_study_id", "echo_study_id")
    ids = {str(value) for column in columns for value in cohort[column].drop_nulls().to_list()}
    logs = list((demo_run / "results/logs").rglob("*.log")) + list((demo_run / ".snakemake/log").glob("*.log"))
    assert len(logs) > 20, "every job writes a log"
    for log in logs:
        words = set(re.findall(r"\d{8}", log.read_text(errors="ignore")))
        leaked = words & ids
        assert not leaked, f"{log.relative_to(demo_run)} names {len(leaked)} cohort patients, admissions or studies"


def test_no_sql_pastes_a_path_unquoted():
    """A path put into SQL as '{path}' breaks on a quote in a folder name and lets the name change the query:
    paths go through hftri_mimic.common.db.sql_literal or a parameter (docs/SECURITY.md)."""
    functions = r"read_parquet|read_csv\w*|read_json\w*|parquet_scan|\bTO|\bFROM|ATTACH"
    pasted = re.compile(rf"({functions})\s*\(?\s*'\{{", re.IGNORECASE)
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for package in ("hftri_mimic", "models", "workflow/scripts")
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pasted.search(line)
    ]
    assert not offenders, f"paths pasted into SQL unquoted: {offenders}"


def test_the_code_cites_documents_that_are_in_the_repository():
    """Definitions are cited from docs/ (or the paper), never from a document outside the repository."""
    cited: dict[str, set[str]] = {}
    outside = []
    for name in tracked_files():
        path = REPO / name
        if name == "docs/HISTORY.md" or not path.is_file() or path.suffix in (".lock", ".png"):
            continue
        text = path.read_text(errors="ignore")
        if re.search(r"\bSPEC(\.md| §)", text):
            outside.append(name)
        for doc in re.findall(r"\bdocs/([A-Z_]+\.md)", text):
            cited.setdefault(doc, set()).add(name)
    assert not outside, f"cite docs/ or the paper, not SPEC: {outside}"
    missing = {doc: sorted(files)[:3] for doc, files in cited.items() if not (REPO / "docs" / doc).is_file()}
    assert not missing, f"cited documents that do not exist: {missing}"
    assert len(cited) >= 5
