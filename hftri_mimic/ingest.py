"""Ingest (SPEC §4.1): each needed source table is converted once to Parquet by DuckDB, sorted by
subject and time, with the column types of the real MIMIC-IV files declared rather than sniffed.

Later rules read only these Parquet files, so a demo source and a real download look the same
from here on.
"""

from __future__ import annotations

import gzip
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from hftri_mimic.db import connect, copy_to_parquet, sql_literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceTable:
    """A source file: where it lies under its root, its columns (name -> DuckDB type), the columns the
    workflow needs (a missing one is an error before any row is read) and the sort order (subject and
    time, then a unique key, so that the Parquet file is the same bytes on every run)."""

    relpath: str
    columns: dict[str, str]
    required: tuple[str, ...]
    order_by: tuple[str, ...]
    layout_hint: str


HOSP_HINT = "MIMIC-IV v3.1 hosp/ (physionet.org/files/mimiciv/3.1/hosp/)"
ECG_HINT = "MIMIC-IV-ECG v1.0 root (physionet.org/files/mimic-iv-ecg/1.0/)"
ECHO_HINT = "MIMIC-IV-ECHO v0.1 root (physionet.org/files/mimic-iv-echo/0.1/)"

TABLES: dict[str, SourceTable] = {
    "patients": SourceTable(
        "patients.csv.gz",
        {
            "subject_id": "BIGINT",
            "gender": "VARCHAR",
            "anchor_age": "BIGINT",
            "anchor_year": "BIGINT",
            "anchor_year_group": "VARCHAR",
            "dod": "DATE",
        },
        ("subject_id", "gender", "anchor_age", "anchor_year", "dod"),
        ("subject_id",),
        HOSP_HINT,
    ),
    "admissions": SourceTable(
        "admissions.csv.gz",
        {
            "subject_id": "BIGINT",
            "hadm_id": "BIGINT",
            "admittime": "TIMESTAMP",
            "dischtime": "TIMESTAMP",
            "deathtime": "TIMESTAMP",
            "admission_type": "VARCHAR",
            "admit_provider_id": "VARCHAR",
            "admission_location": "VARCHAR",
            "discharge_location": "VARCHAR",
            "insurance": "VARCHAR",
            "language": "VARCHAR",
            "marital_status": "VARCHAR",
            "race": "VARCHAR",
            "edregtime": "TIMESTAMP",
            "edouttime": "TIMESTAMP",
            "hospital_expire_flag": "BIGINT",
        },
        ("subject_id", "hadm_id", "admittime", "dischtime", "race"),
        ("subject_id", "admittime", "hadm_id"),
        HOSP_HINT,
    ),
    "diagnoses_icd": SourceTable(
        "diagnoses_icd.csv.gz",
        {
            "subject_id": "BIGINT",
            "hadm_id": "BIGINT",
            "seq_num": "BIGINT",
            "icd_code": "VARCHAR",
            "icd_version": "BIGINT",
        },
        ("subject_id", "hadm_id", "icd_code", "icd_version"),
        ("subject_id", "hadm_id", "seq_num"),
        HOSP_HINT,
    ),
    "d_icd_diagnoses": SourceTable(
        "d_icd_diagnoses.csv.gz",
        {"icd_code": "VARCHAR", "icd_version": "BIGINT", "long_title": "VARCHAR"},
        ("icd_code", "icd_version", "long_title"),
        ("icd_version", "icd_code"),
        HOSP_HINT,
    ),
    "labevents": SourceTable(
        "labevents.csv.gz",
        {
            "labevent_id": "BIGINT",
            "subject_id": "BIGINT",
            "hadm_id": "BIGINT",
            "specimen_id": "BIGINT",
            "itemid": "BIGINT",
            "order_provider_id": "VARCHAR",
            "charttime": "TIMESTAMP",
            "storetime": "TIMESTAMP",
            "value": "VARCHAR",
            "valuenum": "DOUBLE",
            "valueuom": "VARCHAR",
            "ref_range_lower": "DOUBLE",
            "ref_range_upper": "DOUBLE",
            "flag": "VARCHAR",
            "priority": "VARCHAR",
            "comments": "VARCHAR",
        },
        ("subject_id", "hadm_id", "itemid", "charttime", "storetime", "value", "valuenum", "valueuom"),
        ("subject_id", "charttime", "labevent_id"),
        HOSP_HINT,
    ),
    "d_labitems": SourceTable(
        "d_labitems.csv.gz",
        {"itemid": "BIGINT", "label": "VARCHAR", "fluid": "VARCHAR", "category": "VARCHAR"},
        ("itemid", "label"),
        ("itemid",),
        HOSP_HINT,
    ),
    "omr": SourceTable(
        "omr.csv.gz",
        {
            "subject_id": "BIGINT",
            "chartdate": "DATE",
            "seq_num": "BIGINT",
            "result_name": "VARCHAR",
            "result_value": "VARCHAR",
        },
        ("subject_id", "chartdate", "result_name", "result_value"),
        ("subject_id", "chartdate", "result_name", "seq_num", "result_value"),
        HOSP_HINT,
    ),
    "prescriptions": SourceTable(
        "prescriptions.csv.gz",
        {
            "subject_id": "BIGINT",
            "hadm_id": "BIGINT",
            "pharmacy_id": "BIGINT",
            "poe_id": "VARCHAR",
            "poe_seq": "BIGINT",
            "order_provider_id": "VARCHAR",
            "starttime": "TIMESTAMP",
            "stoptime": "TIMESTAMP",
            "drug_type": "VARCHAR",
            "drug": "VARCHAR",
            "formulary_drug_cd": "VARCHAR",
            "gsn": "VARCHAR",
            "ndc": "VARCHAR",
            "prod_strength": "VARCHAR",
            "form_rx": "VARCHAR",
            "dose_val_rx": "VARCHAR",
            "dose_unit_rx": "VARCHAR",
            "form_val_disp": "VARCHAR",
            "form_unit_disp": "VARCHAR",
            "doses_per_24_hrs": "DOUBLE",
            "route": "VARCHAR",
        },
        ("subject_id", "hadm_id", "starttime", "drug"),
        ("subject_id", "starttime", "pharmacy_id"),
        HOSP_HINT,
    ),
    "ecg_record_list": SourceTable(
        "record_list.csv",
        {
            "subject_id": "BIGINT",
            "study_id": "BIGINT",
            "file_name": "VARCHAR",
            "ecg_time": "TIMESTAMP",
            "path": "VARCHAR",
        },
        ("subject_id", "study_id", "ecg_time", "path"),
        ("subject_id", "ecg_time", "study_id"),
        ECG_HINT,
    ),
    "echo_study_list": SourceTable(
        "echo-study-list.csv",
        {
            "subject_id": "BIGINT",
            "study_id": "BIGINT",
            "study_datetime": "TIMESTAMP",
            "note_id": "VARCHAR",
            "note_seq": "BIGINT",
            "note_charttime": "TIMESTAMP",
        },
        ("subject_id", "study_id", "study_datetime"),
        ("subject_id", "study_datetime", "study_id"),
        ECHO_HINT,
    ),
    "echo_record_list": SourceTable(
        "echo-record-list.csv",
        {
            "subject_id": "BIGINT",
            "study_id": "BIGINT",
            "acquisition_datetime": "TIMESTAMP",
            "dicom_filepath": "VARCHAR",
        },
        ("subject_id", "study_id", "dicom_filepath"),
        ("subject_id", "study_id", "dicom_filepath"),
        ECHO_HINT,
    ),
}
HOSP_TABLES = (
    "patients",
    "admissions",
    "diagnoses_icd",
    "d_icd_diagnoses",
    "labevents",
    "d_labitems",
    "omr",
    "prescriptions",
)
ECG_TABLES = ("ecg_record_list",)
ECHO_TABLES = ("echo_study_list", "echo_record_list")


class SourceError(RuntimeError):
    """A source file is missing or does not have the layout of the real download."""


def read_header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as stream:
            line = stream.readline()
    except (OSError, EOFError) as err:
        raise SourceError(f"{path}: cannot be read ({err})") from err
    if not line.strip():
        raise SourceError(f"{path}: empty file (expected a CSV header line)")
    return [name.strip().strip('"') for name in line.rstrip("\r\n").split(",")]


def check_source_table(name: str, path: Path | str) -> list[str]:
    """Check that a source file exists and has the columns the workflow needs; return its header."""
    table = TABLES[name]
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: missing. Expected {table.relpath} under the {table.layout_hint}")
    header = read_header(path)
    missing = [c for c in table.required if c not in header]
    if missing:
        raise SourceError(
            f"{path}: missing column(s) {missing}; found {header}. "
            f"Expected the layout of {table.relpath} in the {table.layout_hint}"
        )
    return header


def ingest_table(
    name: str,
    src: Path | str,
    out: Path | str,
    threads: int = 1,
    mem_mb: int | None = None,
    temp_dir: Path | str | None = None,
) -> int:
    """Convert one source CSV to Parquet (zstd, sorted by subject and time); return the row count."""
    t0 = time.perf_counter()
    table = TABLES[name]
    header = check_source_table(name, src)
    # Known columns get the real type; a column we do not know (a newer release) is kept as text.
    types = {c: table.columns.get(c, "VARCHAR") for c in header}
    columns = "{" + ", ".join(f"{sql_literal(c)}: {sql_literal(t)}" for c, t in types.items()) + "}"
    con = connect(threads, mem_mb, temp_dir)
    con.execute("SET preserve_insertion_order = true")
    select = (
        f"SELECT * FROM read_csv({sql_literal(str(src))}, header = true, columns = {columns}, "
        f"timestampformat = '%Y-%m-%d %H:%M:%S', dateformat = '%Y-%m-%d', quote = '\"', escape = '\"') "
        f"ORDER BY {', '.join(table.order_by)}"
    )
    rows = copy_to_parquet(con, select, out, sort=False)
    log.info("ingest %s: %d rows in %.1f s", name, rows, time.perf_counter() - t0)
    return rows
