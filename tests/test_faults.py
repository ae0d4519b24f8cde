"""Fault injection on the MIMIC-IV hosp source (docs/FAULTS.md, issue #11).

Each case copies the real MIMIC-IV demo hosp tables (tests/reference_data.py), corrupts one thing and checks the
outcome:
either an error before any job (at the latest when the table's ingest job reads it) that names the file and
the problem, or a named exclusion whose counts reconcile (rows in = rows kept + rows excluded). The fault
table is docs/FAULTS.md; the last test keeps it in step with the tests that assert it.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO, base_config, snakemake, write_config
from reference_data import mimic_demo_hosp

from hftri_mimic.cohort.concepts import (
    EmptyCohortError,
    check_attrition,
    hf_admissions,
    index_admissions,
    lab_admissions,
)
from hftri_mimic.dataset.ehr import history_groups, lab_values
from hftri_mimic.ingest.tables import (
    HOSP_TABLES,
    INGEST_EXCLUSIONS,
    RejectedShareError,
    SourceError,
    check_source_table,
    ingest_table,
    value_shape,
)

CONFIG = base_config()
LAB_ITEMIDS = CONFIG["cohort"]["lab_itemids"]
HF_CODES = CONFIG["labels"]["hf_code_lists"]["strict"]
INGEST_STEP = "admission row excluded at ingest"
NO_PATIENT_STEP = "no usable patients row"


class Table:
    """A source CSV.gz as rows of text, to corrupt and write back. Line n of the file is ``rows[n - 1]``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with gzip.open(path, "rt", newline="") as stream:
            self.rows = list(csv.reader(stream))

    @property
    def header(self) -> list[str]:
        return self.rows[0]

    @property
    def n_data_rows(self) -> int:
        return len(self.rows) - 1

    def get(self, line: int, column: str) -> str:
        return self.rows[line - 1][self.header.index(column)]

    def set(self, line: int, column: str, value: str) -> None:
        self.rows[line - 1][self.header.index(column)] = value

    def line_of(self, **values) -> int:
        """The first line whose columns hold these values (compared as text)."""
        for line, row in enumerate(self.rows[1:], start=2):
            if all(row[self.header.index(c)] == str(v) for c, v in values.items()):
                return line
        raise KeyError(values)

    def drop_column(self, column: str) -> None:
        index = self.header.index(column)
        self.rows = [row[:index] + row[index + 1 :] for row in self.rows]

    def save(self) -> None:
        with gzip.open(self.path, "wt", newline="", compresslevel=1) as stream:
            csv.writer(stream, lineterminator="\n").writerows(self.rows)


def copy_hosp(dest: Path) -> Path:
    """The 8 hosp tables the workflow reads, copied (writable) from the real MIMIC-IV demo."""
    dest.mkdir(parents=True)
    for table in HOSP_TABLES:
        shutil.copyfile(mimic_demo_hosp() / f"{table}.csv.gz", dest / f"{table}.csv.gz")
    return dest


@pytest.fixture
def hosp(tmp_path) -> Path:
    return copy_hosp(tmp_path / "hosp")


def configured_lab_values(cohort: Path, labevents: Path, out: Path) -> None:
    """Lab values of the index admissions in ``cohort`` (with its d_labitems) from ``labevents``, as configured."""
    lab_values(
        cohort / "index_admissions.parquet",
        labevents,
        cohort / "d_labitems.parquet",
        out,
        LAB_ITEMIDS,
        reference=CONFIG["dataset"]["reference_time"],
        storetime_before_reference=CONFIG["dataset"]["lab_storetime_before_reference"],
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """The uncorrupted tables through the library: ingest, labs-only cohort (as the hosp-only workflow), lab
    values and HF admissions. Tests compare a corrupted source with these files."""
    out = tmp_path_factory.mktemp("clean")
    hosp = copy_hosp(out / "hosp")
    for table in ("patients", "admissions", "labevents", "d_labitems", "diagnoses_icd"):
        ingest_table(table, hosp / f"{table}.csv.gz", out / f"{table}.parquet")
    lab_admissions(out / "labevents.parquet", out / "lab_admissions.parquet", LAB_ITEMIDS)
    cohort_attrition(out, out)
    configured_lab_values(out, out / "labevents.parquet", out / "lab_values.parquet")
    hf_admissions(out / "diagnoses_icd.parquet", out / "hf_admissions.parquet", **HF_CODES)
    return out


def cohort_attrition(parquet: Path, out: Path) -> pl.DataFrame:
    """index_admissions as the hosp-only workflow runs it (labs required), from ingested tables in ``parquet``
    (lab_admissions.parquet may come from another folder: it only depends on labevents)."""
    labs = parquet / "lab_admissions.parquet"
    index_admissions(
        admissions=parquet / "admissions.parquet",
        patients=parquet / "patients.parquet",
        out=out / "index_admissions.parquet",
        attrition_out=out / "attrition.parquet",
        eligibility_out=out / "eligibility.parquet",
        min_age=CONFIG["cohort"]["min_age"],
        require_modalities=["lab"],
        order=CONFIG["cohort"]["index_admission"],
        lab_admissions=labs if labs.exists() else out / "lab_admissions.parquet",
        admission_exclusions=parquet / "admissions.exclusions.parquet",
    )
    attrition = pl.read_parquet(out / "attrition.parquet").sort("reason_id")
    check_attrition(attrition)
    return attrition


def step(attrition: pl.DataFrame, prefix: str) -> dict:
    rows = attrition.filter(pl.col("reason").str.starts_with(prefix)).rows(named=True)
    assert len(rows) == 1, f"one attrition step {prefix!r} expected:\n{attrition}"
    return rows[0]


def configure_mimic(workdir: Path, hosp: Path) -> None:
    write_config(
        workdir,
        source={"kind": "mimic", "hosp_root": str(hosp), "ecg_root": None, "echo_root": None},
        cohort={"require_modalities": ["lab"]},
    )


def run_cohort(workdir: Path, hosp: Path) -> subprocess.CompletedProcess:
    configure_mimic(workdir, hosp)
    return snakemake(workdir, "--cores", "2", "results/cohort/cohort.parquet", check=False)


# --------------------------------------------------------------------------------------------------------------
# Files: an error before any job, naming the file and the problem
# --------------------------------------------------------------------------------------------------------------


def header_only(hosp: Path) -> None:
    table = Table(hosp / "admissions.csv.gz")
    table.rows = table.rows[:1]
    table.save()


def drop(name: str, column: str) -> Callable[[Path], None]:
    def corrupt(hosp: Path) -> None:
        table = Table(hosp / f"{name}.csv.gz")
        table.drop_column(column)
        table.save()

    return corrupt


def rename(name: str, column: str, new: str) -> Callable[[Path], None]:
    def corrupt(hosp: Path) -> None:
        table = Table(hosp / f"{name}.csv.gz")
        table.rows[0][table.header.index(column)] = new
        table.save()

    return corrupt


def directory_in_place(hosp: Path) -> None:
    (hosp / "omr.csv.gz").unlink()
    (hosp / "omr.csv.gz").mkdir()


# fault -> (corruption, file named, problem named)
FILE_FAULTS = {
    "missing_table": (lambda hosp: (hosp / "labevents.csv.gz").unlink(), "labevents.csv.gz", "missing. Expected"),
    "header_only": (header_only, "admissions.csv.gz", "header only, no data rows"),
    "zero_bytes": (lambda hosp: (hosp / "patients.csv.gz").write_bytes(b""), "patients.csv.gz", "empty file"),
    "missing_column": (drop("admissions", "hadm_id"), "admissions.csv.gz", "missing column(s) ['hadm_id']"),
    "renamed_column": (
        rename("labevents", "charttime", "chart_time"),
        "labevents.csv.gz",
        "missing column(s) ['charttime']",
    ),
    "missing_sort_column": (drop("labevents", "labevent_id"), "labevents.csv.gz", "missing column(s) ['labevent_id']"),
    "directory_in_place": (directory_in_place, "omr.csv.gz", "is a directory, not a file"),
    "not_gzip": (
        lambda hosp: (hosp / "d_labitems.csv.gz").write_text("itemid,label\n50912,Creatinine\n"),
        "d_labitems.csv.gz",
        "cannot be read (Not a gzipped file",
    ),
}


@pytest.mark.parametrize("fault", list(FILE_FAULTS))
def test_file_fault_is_named_before_any_job(tmp_path, hosp, fault):
    corrupt, name, problem = FILE_FAULTS[fault]
    corrupt(hosp)
    proc = run_cohort(tmp_path, hosp)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{fault}: the workflow ran"
    assert f"config source.hosp_root: {hosp / name}: {problem}" in message, message[-3000:]
    assert not (tmp_path / "results").exists(), "no job may run on a broken source"


@pytest.mark.parametrize("table", HOSP_TABLES)
def test_each_missing_hosp_table_is_named_with_its_layout(hosp, table):
    (hosp / f"{table}.csv.gz").unlink()
    with pytest.raises(SourceError) as info:
        check_source_table(table, hosp / f"{table}.csv.gz")
    assert str(info.value) == (
        f"{hosp / table}.csv.gz: missing. Expected {table}.csv.gz under the "
        "MIMIC-IV v3.1 hosp/ (physionet.org/files/mimiciv/3.1/hosp/)"
    )


def check_as(uid: int | None, table: str, path: Path) -> str:
    """The pre-job check in a forked child, as user ``uid`` (None: this user); returns 'ok' or the error."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            check_source_table(table, path)
            message = "ok"
        except BaseException as err:
            message = f"{type(err).__name__}: {err}"
        finally:
            os.write(write, message.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as stream:
        message = stream.read()
    os.waitpid(pid, 0)
    return message


def test_file_without_read_permission_is_named():
    """chmod 000. Root reads any file whatever its mode, so as root the check runs in a child process that has
    become the unprivileged user nobody, for whom the mode does block reading."""
    uid = 65534 if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="hftri-faults-"))  # pytest's tmp folders are private to their owner
    try:
        folder.chmod(0o755)
        path = folder / "admissions.csv.gz"
        shutil.copyfile(mimic_demo_hosp() / "admissions.csv.gz", path)
        path.chmod(0o644)
        assert check_as(uid, "admissions", path) == "ok", "control: the checking user reads the file before chmod"
        path.chmod(0o000)
        message = check_as(uid, "admissions", path)
        assert message.startswith(f"SourceError: {path}: cannot be read ([Errno 13] Permission denied"), message
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_truncated_gzip_fails_its_ingest_job_naming_the_file(tmp_path, hosp):
    """The header reads fine, so only decompressing the whole file finds the cut: the ingest job of that table
    stops with the file and the problem, and quotes no row (patient data)."""
    path = hosp / "labevents.csv.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    proc = run_cohort(tmp_path, hosp)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    expected = f"{path}: cannot be read as labevents.csv.gz of the MIMIC-IV v3.1 hosp/"
    assert expected in message and "Unexpected end of GZIP stream" in message, message[-3000:]
    assert expected in (tmp_path / "results/logs/ingest/labevents.log").read_text()
    assert not (tmp_path / "results/parquet/labevents.parquet").exists()
    assert not list((tmp_path / "results/parquet").glob("labevents.*")), "no partial output is left"
    assert not (tmp_path / "results/cohort/cohort.parquet").exists()


# --------------------------------------------------------------------------------------------------------------
# Rows: excluded at ingest with a named reason; rows in = kept + excluded
# --------------------------------------------------------------------------------------------------------------

KEYS = {"admissions": "hadm_id", "labevents": "labevent_id", "patients": "subject_id"}

BAD_DATE = "2180-13-45 25:00:00"  # month 13, day 45, hour 25

# id -> (table, column, bad value, reason, detail); the bad value goes into line 5
VALUE_FAULTS = {
    "admittime-bad-date": ("admissions", "admittime", BAD_DATE, "unreadable_value", "admittime is not a TIMESTAMP"),
    "admittime-na": ("admissions", "admittime", "n/a", "unreadable_value", "admittime is not a TIMESTAMP"),
    "admittime-empty": ("admissions", "admittime", "", "missing_value", "empty: admittime"),
    "dischtime-empty": ("admissions", "dischtime", "", "missing_value", "empty: dischtime"),
    "charttime-bad-date": ("labevents", "charttime", BAD_DATE, "unreadable_value", "charttime is not a TIMESTAMP"),
    "charttime-na": ("labevents", "charttime", "n/a", "unreadable_value", "charttime is not a TIMESTAMP"),
    "charttime-empty": ("labevents", "charttime", "", "missing_value", "empty: charttime"),
    "valuenum-lt-0.01": ("labevents", "valuenum", "<0.01", "unreadable_value", "valuenum is not a DOUBLE"),
    "valuenum-gt-1000": ("labevents", "valuenum", ">1000", "unreadable_value", "valuenum is not a DOUBLE"),
    "valuenum-underscores": ("labevents", "valuenum", "___", "unreadable_value", "valuenum is not a DOUBLE"),
    "valuenum-ERROR": ("labevents", "valuenum", "ERROR", "unreadable_value", "valuenum is not a DOUBLE"),
    "anchor_age-na": ("patients", "anchor_age", "n/a", "unreadable_value", "anchor_age is not a BIGINT"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(VALUE_FAULTS))
def test_bad_value_excludes_its_row_at_ingest(tmp_path, hosp, fault):
    name, column, value, reason, detail = VALUE_FAULTS[fault]
    table = Table(hosp / f"{name}.csv.gz")
    line, key = 5, KEYS[name]
    subject, key_value = int(table.get(line, "subject_id")), int(table.get(line, key))
    table.set(line, column, value)
    table.save()

    kept = ingest_table(name, table.path, tmp_path / f"{name}.parquet")
    exclusions = pl.read_parquet(tmp_path / f"{name}.exclusions.parquet")
    assert exclusions.height == 1, exclusions
    row = exclusions.row(0, named=True)
    # DuckDB names the line of a value it cannot read; an empty value is found after reading (line unknown).
    expected_line = line if reason == "unreadable_value" else None
    assert row == {"line": expected_line, "subject_id": subject, "reason": reason, "detail": detail}
    assert reason in INGEST_EXCLUSIONS
    assert kept + exclusions.height == table.n_data_rows, "rows in != kept + excluded"
    ingested = pl.read_parquet(tmp_path / f"{name}.parquet")
    assert key_value not in ingested[key].to_list(), "the excluded row is still in the table"


@pytest.mark.parametrize(
    ("shape", "detail"),
    [("too-few-fields", "missing columns"), ("too-many-fields", "too many columns")],
    ids=["too-few-fields", "too-many-fields"],
)
def test_line_with_a_wrong_number_of_fields_is_malformed(tmp_path, hosp, shape, detail):
    table = Table(hosp / "admissions.csv.gz")
    line = 6
    subject, row = int(table.get(line, "subject_id")), table.rows[line - 1]
    table.rows[line - 1] = row[:5] if shape == "too-few-fields" else [*row, "extra"]
    table.save()
    kept = ingest_table("admissions", table.path, tmp_path / "admissions.parquet")
    exclusions = pl.read_parquet(tmp_path / "admissions.exclusions.parquet")
    assert exclusions.rows(named=True) == [
        {"line": line, "subject_id": subject, "reason": "malformed_line", "detail": detail}
    ]
    assert kept + 1 == table.n_data_rows, "rows in != kept + excluded"


def swap_times(table: Table, line: int) -> None:
    admit, disch = table.get(line, "admittime"), table.get(line, "dischtime")
    table.set(line, "admittime", disch)
    table.set(line, "dischtime", admit)


def copy_row(table: Table, line: int) -> None:
    table.rows.append(list(table.rows[line - 1]))


def conflicting_copy(table: Table, line: int) -> None:
    copy_row(table, line)
    table.set(len(table.rows), "dischtime", "2199-01-01 00:00:00")


# fault -> (corruption of the admissions line, reasons excluded, rows of the hadm_id kept)
ADMISSION_FAULTS = {
    "bad-admittime": (lambda t, n: t.set(n, "admittime", BAD_DATE), ["unreadable_value"], 0),
    "empty-dischtime": (lambda t, n: t.set(n, "dischtime", ""), ["missing_value"], 0),
    "discharge-before-admission": (swap_times, ["discharge_before_admission"], 0),
    "duplicate-row": (copy_row, ["duplicate_row"], 1),
    "conflicting-duplicate": (conflicting_copy, ["conflicting_duplicate", "conflicting_duplicate"], 0),
}


@pytest.mark.parametrize("fault", list(ADMISSION_FAULTS))
def test_admission_fault_is_a_named_attrition_step(tmp_path, hosp, clean, fault):
    corrupt, reasons, n_kept = ADMISSION_FAULTS[fault]
    table = Table(hosp / "admissions.csv.gz")
    line = 7
    hadm_id = int(table.get(line, "hadm_id"))
    corrupt(table, line)
    table.save()
    for name in ("admissions", "patients"):
        ingest_table(name, hosp / f"{name}.csv.gz", tmp_path / f"{name}.parquet")
    shutil.copyfile(clean / "lab_admissions.parquet", tmp_path / "lab_admissions.parquet")
    attrition = cohort_attrition(tmp_path, tmp_path)

    exclusions = pl.read_parquet(tmp_path / "admissions.exclusions.parquet")
    assert sorted(exclusions["reason"]) == sorted(reasons)
    admissions = pl.read_parquet(tmp_path / "admissions.parquet")
    assert admissions["hadm_id"].to_list().count(hadm_id) == n_kept
    assert admissions.height + exclusions.height == table.n_data_rows, "rows in != kept + excluded"
    source, excluded = attrition.row(0, named=True), step(attrition, INGEST_STEP)
    assert source["n_records"] == table.n_data_rows, "the first step counts every row of the source file"
    assert excluded["reason_id"] == 1 and excluded["excluded_records"] == len(reasons)
    assert excluded["n_records"] == admissions.height
    clean_attrition = pl.read_parquet(clean / "attrition.parquet").sort("reason_id")
    assert INGEST_STEP not in " ".join(clean_attrition["reason"]), "the clean source has no such step"
    index = pl.read_parquet(tmp_path / "index_admissions.parquet")
    assert attrition["n_subjects"][-1] == index.height


@pytest.mark.parametrize("columns", ["needed", "all"])
def test_bad_value_in_a_column_the_workflow_does_not_read(tmp_path, hosp, columns):
    """``ingest.columns: needed`` does not read ref_range_lower, so its bad value costs no row; ``all`` reads it."""
    table = Table(hosp / "labevents.csv.gz")
    line = 5
    table.set(line, "ref_range_lower", "abc")
    table.save()
    kept = ingest_table("labevents", table.path, tmp_path / "labevents.parquet", columns=columns)
    exclusions = pl.read_parquet(tmp_path / "labevents.exclusions.parquet")
    assert kept + exclusions.height == table.n_data_rows, "rows in != kept + excluded"
    if columns == "needed":
        assert exclusions.height == 0
        assert "ref_range_lower" not in pl.read_parquet_schema(tmp_path / "labevents.parquet")
    else:
        assert exclusions.select("line", "reason", "detail").rows() == [
            (line, "unreadable_value", "ref_range_lower is not a DOUBLE")
        ]


@pytest.mark.parametrize("columns", ["needed", "all"])
def test_copy_differing_only_in_an_unread_column(tmp_path, hosp, columns):
    """Two admissions rows with one hadm_id that differ only in `insurance`: copies as far as the workflow reads
    (one kept) with ``columns: needed``; conflicting (none kept) with ``all``."""
    table = Table(hosp / "admissions.csv.gz")
    line = 7
    hadm_id = int(table.get(line, "hadm_id"))
    copy_row(table, line)
    table.set(len(table.rows), "insurance", "Other" if table.get(line, "insurance") != "Other" else "Medicare")
    table.save()
    kept = ingest_table("admissions", table.path, tmp_path / "admissions.parquet", columns=columns)
    exclusions = pl.read_parquet(tmp_path / "admissions.exclusions.parquet")
    assert kept + exclusions.height == table.n_data_rows, "rows in != kept + excluded"
    admissions = pl.read_parquet(tmp_path / "admissions.parquet")
    expected = ["duplicate_row"] if columns == "needed" else ["conflicting_duplicate", "conflicting_duplicate"]
    assert sorted(exclusions["reason"]) == expected
    assert admissions["hadm_id"].to_list().count(hadm_id) == (1 if columns == "needed" else 0)


def test_admission_fault_reaches_the_workflow_attrition(tmp_path, hosp):
    """The same through Snakemake: the ingest rule writes the exclusions, index_admissions counts them."""
    table = Table(hosp / "admissions.csv.gz")
    swap_times(table, 7)
    table.save()
    proc = run_cohort(tmp_path, hosp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "results"
    exclusions = pl.read_parquet(out / "parquet/admissions.exclusions.parquet")
    assert exclusions["reason"].to_list() == ["discharge_before_admission"]
    attrition = pl.read_parquet(out / "cohort/attrition.parquet").sort("reason_id")
    check_attrition(attrition)
    assert attrition["n_records"][0] == table.n_data_rows
    assert step(attrition, INGEST_STEP)["excluded_records"] == 1
    assert "discharge_before_admission: 1" in (out / "logs/ingest/admissions.log").read_text()


def test_unusable_patients_row_removes_its_admissions_by_name(tmp_path, hosp, clean):
    table = Table(hosp / "patients.csv.gz")
    line = 4
    subject = int(table.get(line, "subject_id"))
    table.set(line, "anchor_age", "n/a")
    table.save()
    for name in ("admissions", "patients"):
        ingest_table(name, hosp / f"{name}.csv.gz", tmp_path / f"{name}.parquet")
    shutil.copyfile(clean / "lab_admissions.parquet", tmp_path / "lab_admissions.parquet")
    attrition = cohort_attrition(tmp_path, tmp_path)
    n_admissions = pl.read_parquet(tmp_path / "admissions.parquet").filter(pl.col("subject_id") == subject).height
    assert n_admissions > 0
    no_patient = step(attrition, NO_PATIENT_STEP)
    assert (no_patient["excluded_records"], no_patient["excluded_subjects"]) == (n_admissions, 1)
    assert "age at admission" in attrition["reason"][no_patient["reason_id"] + 1], "age comes after the patients row"
    index = pl.read_parquet(tmp_path / "index_admissions.parquet")
    assert subject not in index["subject_id"].to_list()
    clean_index = pl.read_parquet(clean / "index_admissions.parquet")
    assert index.height == clean_index.height - (subject in clean_index["subject_id"].to_list())


# --------------------------------------------------------------------------------------------------------------
# Timestamps as other tools write them: the same values; a file in another format: an error, not an empty cohort
# --------------------------------------------------------------------------------------------------------------

MIMIC_TIME = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d):(\d\d)$")

# variant -> how a MIMIC-IV time 'YYYY-MM-DD HH:MM:SS' is rewritten (every time of the real demo has seconds 00)
TIME_VARIANTS = {
    "iso-t": r"\1T\2:\3",  # pandas/ISO 8601: 2196-02-24T14:38:00
    "no-seconds": r"\1 \2",  # spreadsheets: 2196-02-24 14:38
    "iso-t-no-seconds": r"\1T\2",
    "fractional-seconds": r"\1 \2:\3.000",  # 2196-02-24 14:38:00.000
    "iso-t-utc": r"\1T\2:\3.000000Z",  # JSON exports: 2196-02-24T14:38:00.000000Z
    "iso-t-offset": r"\1T\2:\3+02:00",  # an offset is dropped, keeping the clock time (docs/FAULTS.md)
}


def rewrite_times(table: Table, pattern: str) -> int:
    """Rewrite every MIMIC-IV time of the table with ``pattern``; the number of values rewritten."""
    n = 0
    for row in table.rows[1:]:
        for i, value in enumerate(row):
            new, k = MIMIC_TIME.subn(pattern, value)
            row[i], n = new, n + k
    table.save()
    return n


@pytest.mark.parametrize("variant", list(TIME_VARIANTS))
def test_timestamp_variants_read_as_the_same_value(tmp_path, hosp, clean, variant):
    table = Table(hosp / "admissions.csv.gz")
    assert rewrite_times(table, TIME_VARIANTS[variant]) > 3 * table.n_data_rows, "admit, disch, edreg, edout times"
    ingest_table("admissions", table.path, tmp_path / "admissions.parquet")
    assert pl.read_parquet(tmp_path / "admissions.exclusions.parquet").height == 0
    assert pl.read_parquet(tmp_path / "admissions.parquet").equals(pl.read_parquet(clean / "admissions.parquet"))


def test_iso_timestamps_give_the_same_cohort(tmp_path, hosp, clean):
    """Measured before (2026-12-04): this rewrite made every admission `unreadable_value` and the cohort empty."""
    for name in ("admissions", "labevents"):
        rewrite_times(Table(hosp / f"{name}.csv.gz"), TIME_VARIANTS["iso-t"])
        ingest_table(name, hosp / f"{name}.csv.gz", tmp_path / f"{name}.parquet")
    ingest_table("patients", hosp / "patients.csv.gz", tmp_path / "patients.parquet")
    lab_admissions(tmp_path / "labevents.parquet", tmp_path / "lab_admissions.parquet", LAB_ITEMIDS)
    cohort_attrition(tmp_path, tmp_path)
    ours, expected = (pl.read_parquet(p / "index_admissions.parquet") for p in (tmp_path, clean))
    assert expected.height > 50 and ours.equals(expected)


def day_first(table: Table, lines: range | None = None) -> None:
    """'2196-02-24 14:38:00' -> '24/02/2196 14:38' (a spreadsheet's export) in ``lines`` (default: every line)."""
    for line in lines or range(2, len(table.rows) + 1):
        for i, value in enumerate(table.rows[line - 1]):
            table.rows[line - 1][i] = MIMIC_TIME.sub(lambda m: "/".join(m[1].split("-")[::-1]) + " " + m[2], value)
    table.save()


def test_mostly_unreadable_timestamps_stop_the_ingest_job(tmp_path, hosp):
    """Day-first dates in admissions: the run stops at that table's ingest job, naming the file, the column, the
    count and the shape of the first values (masked: no patient value reaches the log), and writes no cohort."""
    table = Table(hosp / "admissions.csv.gz")
    first_admittime = table.get(2, "admittime")
    day_first(table)
    proc = run_cohort(tmp_path, hosp)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    log = (tmp_path / "results/logs/ingest/admissions.log").read_text()
    for text in (message, log):
        assert f"{table.path}: more than 1.0% of the rows lost in a needed column" in text, text[-3000:]
        assert "column admittime: 275 of 275 rows (100.0%; 275 unreadable as TIMESTAMP, 0 empty)" in text
        assert "line 2: '99/99/9999 99:99'" in text
        assert table.get(2, "admittime") not in text and first_admittime not in text, "a patient value was logged"
    assert not list((tmp_path / "results/parquet").glob("admissions*"))
    assert not (tmp_path / "results/cohort/cohort.parquet").exists()


def test_the_rejected_share_bound_is_configurable(tmp_path, hosp):
    """3 of 100 patients rows with an unreadable anchor_age: over the default 1% an error; under a 5% bound, three
    named exclusions. A bound of 0 makes any unreadable needed value an error."""
    table = Table(hosp / "patients.csv.gz")
    for line in (3, 4, 5):
        table.set(line, "anchor_age", "n/a")
    table.save()
    with pytest.raises(RejectedShareError, match=r"column anchor_age: 3 of 100 rows \(3\.0%.*line 3: 'a/a'"):
        ingest_table("patients", table.path, tmp_path / "patients.parquet")
    assert not (tmp_path / "patients.exclusions.parquet").exists(), "nothing is written"
    kept = ingest_table("patients", table.path, tmp_path / "patients.parquet", max_rejected_share=0.05)
    exclusions = pl.read_parquet(tmp_path / "patients.exclusions.parquet")
    assert (kept, sorted(exclusions["line"])) == (97, [3, 4, 5])
    table.rows = table.rows[:5]  # 4 rows, 3 bad: any bound below 75% stops
    table.save()
    with pytest.raises(RejectedShareError, match="3 of 4 rows"):
        ingest_table("patients", table.path, tmp_path / "patients.parquet", max_rejected_share=0.5)


def test_mostly_empty_needed_values_stop_the_ingest_job(tmp_path, hosp):
    table = Table(hosp / "admissions.csv.gz")
    for line in range(2, 102):
        table.set(line, "dischtime", "")
    table.save()
    with pytest.raises(
        RejectedShareError, match=r"column dischtime: 100 of 275 rows \(36\.4%; 0 unreadable as TIMESTAMP, 100 empty\)"
    ):
        ingest_table("admissions", table.path, tmp_path / "admissions.parquet")


def test_value_shape_masks_digits_and_letters():
    assert value_shape("2196-02-24T14:38:00+02") == "9999-99-99A99:99:99+99"
    assert value_shape("n/a") == "a/a" and value_shape("ERROR <0.01") == "AAAAA <9.99" and value_shape("") == ""


def clean_index(clean: Path, out: Path, **criteria) -> int:
    """index_admissions over the clean tables, with the given criteria (min_age, require_modalities, availability)."""
    return index_admissions(
        admissions=clean / "admissions.parquet",
        patients=clean / "patients.parquet",
        out=out / "index_admissions.parquet",
        attrition_out=out / "attrition.parquet",
        eligibility_out=out / "eligibility.parquet",
        order="first",
        lab_admissions=clean / "lab_admissions.parquet",
        **{"min_age": 18, "require_modalities": ["lab"], **criteria},
    )


def test_an_empty_cohort_is_an_error_naming_the_attrition(tmp_path, clean):
    """Every admission below a minimum age of 120: no index admission, an error listing the patients left per step."""
    with pytest.raises(EmptyCohortError, match=r"the cohort is empty.*age at admission < 120: 0"):
        clean_index(clean, tmp_path, min_age=120)
    assert not (tmp_path / "attrition.parquet").exists()
    assert clean_index(clean, tmp_path) > 50, "the same call with the default age keeps the demo's patients"


def test_a_required_modality_without_records_is_an_error(tmp_path, clean):
    """ECG required, but no ECG of the record list falls in an admission window (e.g. every ECG before admittime)."""
    empty = tmp_path / "ecg_admissions.parquet"
    pl.DataFrame(
        schema={"hadm_id": pl.Int64, "ecg_study_id": pl.Int64, "ecg_time": pl.Datetime, "ecg_path": pl.String}
    ).write_parquet(empty)
    with pytest.raises(EmptyCohortError, match=r"'ecg', but no ECG of the record list falls within any admission"):
        clean_index(clean, tmp_path, require_modalities=["lab", "ecg"], ecg_admissions=empty)


# --------------------------------------------------------------------------------------------------------------
# ICD codes: normalised (upper case, no dots, trimmed) where they are matched
# --------------------------------------------------------------------------------------------------------------

ICD_VARIANTS = {
    "lower-case": str.lower,  # 'i5022'
    "dotted": lambda code: f"{code[:3]}.{code[3:]}" if len(code) > 3 else code,  # 'I50.9', '428.0'
    "dotted-lower-case": lambda code: (f"{code[:3]}.{code[3:]}" if len(code) > 3 else code).lower(),  # 'i50.9'
    "padded": lambda code: f" {code} ",
}


@pytest.mark.parametrize("variant", list(ICD_VARIANTS))
def test_icd_code_with_dots_or_lower_case_is_still_recognised(tmp_path, hosp, clean, variant):
    table = Table(hosp / "diagnoses_icd.csv.gz")
    column = table.header.index("icd_code")
    for row in table.rows[1:]:
        row[column] = ICD_VARIANTS[variant](row[column])
    table.save()
    codes = {row[column] for row in table.rows[1:]}
    if variant == "dotted-lower-case":
        assert "428.0" in codes, "the real demo has ICD-9 4280 (heart failure, unspecified)"
    ingest_table("diagnoses_icd", table.path, tmp_path / "diagnoses_icd.parquet")
    assert pl.read_parquet(tmp_path / "diagnoses_icd.exclusions.parquet").height == 0

    hf_admissions(tmp_path / "diagnoses_icd.parquet", tmp_path / "hf_admissions.parquet", **HF_CODES)
    ours, expected = (pl.read_parquet(p / "hf_admissions.parquet").sort("hadm_id") for p in (tmp_path, clean))
    assert expected.height > 20 and ours.equals(expected), "normalised codes must find the same HF admissions"

    groups = CONFIG["dataset"]["history_groups"]
    for folder, diagnoses in ((tmp_path, tmp_path), (clean, clean)):
        history_groups(
            clean / "index_admissions.parquet",
            clean / "admissions.parquet",
            diagnoses / "diagnoses_icd.parquet",
            folder / "history_groups.parquet",
            groups,
            include_index_admission=True,
        )
    ours, expected = (pl.read_parquet(p / "history_groups.parquet").sort(pl.all()) for p in (tmp_path, clean))
    assert expected.height > 20 and ours.equals(expected), "medical history must not depend on how codes are written"


# --------------------------------------------------------------------------------------------------------------
# Lab results written as text: censored numbers are results, the rest named exclusions
# --------------------------------------------------------------------------------------------------------------


def expected_lab_exclusions(labevents: Path, index: Path) -> pl.DataFrame:
    """Independently of the SQL: the candidate rows (configured item, index admission, charttime within it) that
    are not results, with the reason lab_candidates.sql must give."""
    stripped = pl.col("value").str.strip_chars().str.replace(r"^(<=|>=|<|>)\s*", "")
    candidates = (
        pl.read_parquet(labevents)
        .filter(pl.col("itemid").is_in(LAB_ITEMIDS))
        .join(
            pl.read_parquet(index).select("subject_id", "hadm_id", "admittime", "dischtime"),
            on=["subject_id", "hadm_id"],
        )
        .filter(pl.col("charttime").is_between(pl.col("admittime"), pl.col("dischtime")))
    )
    reason = (
        pl.when(pl.col("value").str.strip_chars().is_in(["", "___"]) | pl.col("value").is_null())
        .then(pl.lit("missing_result"))
        .when(pl.col("valuenum").is_not_null() | stripped.cast(pl.Float64, strict=False).is_not_null())
        .then(None)
        .otherwise(pl.lit("not_a_number"))
    )
    return (
        candidates.with_columns(reason=reason)
        .filter(pl.col("reason").is_not_null())
        .select("labevent_id", "reason")
        .sort("labevent_id")
    )


# text in labevents.value (valuenum empty) -> exclusion reason (None: a result)
LAB_TEXTS = {
    "lt-0.01": ("<0.01", None),
    "gt-1000": (">1000", None),
    "underscores": ("___", "missing_result"),
    "ERROR": ("ERROR", "not_a_number"),
}


@pytest.mark.parametrize("text", list(LAB_TEXTS))
def test_lab_value_text_is_a_result_or_a_named_exclusion(tmp_path, hosp, clean, text):
    value, reason = LAB_TEXTS[text]
    # The value chosen for one patient's creatinine in the clean run (the only row at that time): its row gets the
    # text instead.
    unique_times = (
        pl.read_parquet(clean / "labevents.parquet")
        .group_by("subject_id", "itemid", "charttime")
        .len()
        .filter(pl.col("len") == 1)
    )
    chosen = (
        pl.read_parquet(clean / "lab_values.parquet")
        .filter(pl.col("itemid") == 50912)
        .join(unique_times, on=["subject_id", "itemid", "charttime"])
        .sort("subject_id")
        .row(0, named=True)
    )
    table = Table(hosp / "labevents.csv.gz")
    charttime = chosen["charttime"].strftime("%Y-%m-%d %H:%M:%S")
    line = table.line_of(subject_id=chosen["subject_id"], itemid=50912, charttime=charttime, value=chosen["value"])
    labevent_id = int(table.get(line, "labevent_id"))
    table.set(line, "value", value)
    table.set(line, "valuenum", "")
    table.save()
    ingest_table("labevents", table.path, tmp_path / "labevents.parquet")
    configured_lab_values(clean, tmp_path / "labevents.parquet", tmp_path / "lab_values.parquet")
    exclusions = pl.read_parquet(tmp_path / "lab_values.exclusions.parquet")
    values = pl.read_parquet(tmp_path / "lab_values.parquet")
    expected = expected_lab_exclusions(tmp_path / "labevents.parquet", clean / "index_admissions.parquet")
    assert exclusions.select("labevent_id", "reason").sort("labevent_id").equals(expected)
    clean_exclusions = pl.read_parquet(clean / "lab_values.exclusions.parquet")
    assert exclusions.height == clean_exclusions.height + (reason is not None), "one more row excluded, or none"
    assert set(exclusions["reason"]) <= {"missing_result", "not_a_number"}

    creatinine = values.filter(pl.col("subject_id") == chosen["subject_id"], pl.col("itemid") == 50912)
    if reason is None:
        assert creatinine.select("value", "valuenum").rows() == [(value, None)], "a censored result is still the value"
    else:
        assert exclusions.filter(pl.col("labevent_id") == labevent_id)["reason"].to_list() == [reason]
        assert value not in values["value"].to_list(), f"{value!r} reached the lab values"
        assert creatinine.height <= 1 and creatinine["charttime"].to_list() != [chosen["charttime"]]


# --------------------------------------------------------------------------------------------------------------
# The fault table
# --------------------------------------------------------------------------------------------------------------


def test_fault_table_names_only_collected_tests_and_every_fault_test():
    """Every test id in docs/FAULTS.md is collected by pytest, and every fault test of this file is in the table."""
    table = (REPO / "docs/FAULTS.md").read_text()
    ids = re.findall(r"`(tests/test_\w+\.py::[^`\s]+)`", table)
    files = sorted({test_id.split("::")[0] for test_id in ids} | {"tests/test_faults.py"})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    collected = {line.strip() for line in proc.stdout.splitlines() if "::" in line}
    assert len(ids) > 40, "the table lists the hosp, ECG and echo faults"
    missing = sorted(set(ids) - collected)
    assert not missing, f"docs/FAULTS.md names tests that pytest does not collect: {missing}"
    this = {i for i in collected if i.startswith("tests/test_faults.py::")} - {
        "tests/test_faults.py::test_fault_table_names_only_collected_tests_and_every_fault_test"
    }
    unlisted = sorted(this - set(ids))
    assert not unlisted, f"fault tests missing from docs/FAULTS.md: {unlisted}"
