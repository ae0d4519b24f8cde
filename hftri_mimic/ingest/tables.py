"""Ingest (docs/CURATION.md, Ingest): each needed source table is converted once to Parquet by DuckDB, sorted by
subject and time, with the column types of the real MIMIC-IV files declared rather than sniffed, keeping the
columns the workflow reads (config ``ingest.columns: needed``) or every column (``all``).

Later rules read only these Parquet files, so a demo source and a real download look the same
from here on.

Bad input (docs/FAULTS.md): a file that is missing, empty, unreadable or lacks a needed column is an error
that names the file, raised by ``check_source_table`` before any job runs. A bad row is excluded with
a named reason (``INGEST_EXCLUSIONS``) into ``<table>.exclusions.parquet`` beside the table, so that
rows in the source = rows kept + rows excluded. A needed column that loses more than a small share of the rows
(``max_rejected_share``, config ``ingest.max_rejected_share``) is a file in another format, not a few bad rows: the
ingest stops and names the file, the column, the count and the shape of the first values (``RejectedShareError``).

Timestamps are read as ISO 8601 by DuckDB's own TIMESTAMP cast: a space or a ``T`` between date and time, with or
without seconds, with fractional seconds, with or without a trailing ``Z`` all read as the same value. Two forms read
without error and are documented in docs/FAULTS.md: a date alone is midnight, and a UTC offset (``+02:00``) is
dropped, keeping the written clock time (every MIMIC-IV time is a shifted local time; one file's times share a
clock).
"""

from __future__ import annotations

import csv
import gzip
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from hftri_mimic.common.db import connect, copy_to_parquet, sql_literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceTable:
    """A source file: where it lies under its root, its columns (name -> DuckDB type), the columns the
    workflow needs (a missing one is an error before any row is read) and the sort order (subject and
    time, then a unique key, so that the Parquet file is the same bytes on every run).

    Row checks: ``not_null`` columns every row must have; ``key``, columns that identify a row (copies
    of a row and rows that share a key but differ are excluded); ``checks``, (reason, SQL condition that
    a row must meet)."""

    relpath: str
    columns: dict[str, str]
    required: tuple[str, ...]
    order_by: tuple[str, ...]
    layout_hint: str
    not_null: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    checks: tuple[tuple[str, str], ...] = ()

    @property
    def needed(self) -> tuple[str, ...]:
        """Every column the workflow reads from this file (required, sorted by, checked)."""
        return tuple(dict.fromkeys((*self.required, *self.order_by, *self.not_null, *self.key)))


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
        not_null=("subject_id", "gender", "anchor_age", "anchor_year"),
        key=("subject_id",),
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
        ("subject_id", "hadm_id", "admittime", "dischtime", "race", "edregtime"),
        ("subject_id", "admittime", "hadm_id"),
        HOSP_HINT,
        not_null=("subject_id", "hadm_id", "admittime", "dischtime"),
        key=("hadm_id",),
        checks=(("discharge_before_admission", "dischtime >= admittime"),),
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
        not_null=("subject_id", "hadm_id", "icd_code", "icd_version"),
    ),
    "d_icd_diagnoses": SourceTable(
        "d_icd_diagnoses.csv.gz",
        {"icd_code": "VARCHAR", "icd_version": "BIGINT", "long_title": "VARCHAR"},
        ("icd_code", "icd_version", "long_title"),
        ("icd_version", "icd_code"),
        HOSP_HINT,
        not_null=("icd_code", "icd_version"),
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
        not_null=("labevent_id", "subject_id", "itemid", "charttime"),
    ),
    "d_labitems": SourceTable(
        "d_labitems.csv.gz",
        {"itemid": "BIGINT", "label": "VARCHAR", "fluid": "VARCHAR", "category": "VARCHAR"},
        ("itemid", "label", "fluid"),
        ("itemid",),
        HOSP_HINT,
        not_null=("itemid",),
        key=("itemid",),
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
        not_null=("subject_id", "chartdate", "result_name"),
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
        not_null=("subject_id",),
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
        not_null=("subject_id", "study_id", "ecg_time", "path"),
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
        not_null=("subject_id", "study_id", "study_datetime"),
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
        not_null=("subject_id", "study_id", "dicom_filepath"),
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


def source_tree(table: str) -> str:
    """Which PhysioNet tree a source table lies in: hosp, ecg or echo."""
    return "ecg" if table in ECG_TABLES else "echo" if table in ECHO_TABLES else "hosp"


def source_roots(source: dict, out_dir: Path | str) -> dict[str, Path | None]:
    """Where the raw trees are (config ``source``): the demo's folder under ``out_dir``, or the configured roots
    of a real download (None for a tree not configured)."""
    if source["kind"] == "demo":
        return {kind: Path(out_dir) / "source" / kind for kind in ("hosp", "ecg", "echo")}
    return {
        kind: Path(source[f"{kind}_root"]) if source.get(f"{kind}_root") else None for kind in ("hosp", "ecg", "echo")
    }


# Why a source row is excluded at ingest (the reason column of <table>.exclusions.parquet).
INGEST_EXCLUSIONS = {
    "unreadable_value": "a value cannot be read as its column's type (e.g. a timestamp '2180-13-45 25:00:00')",
    "malformed_line": "a line with too few or too many fields, an unterminated quote or invalid UTF-8",
    "missing_value": "an empty value in a column every row must have (e.g. admittime)",
    "discharge_before_admission": "an admission whose dischtime is before its admittime",
    "duplicate_row": "a copy of another row with the same key (one copy is kept)",
    "conflicting_duplicate": "rows that share a key (e.g. hadm_id) but differ: none of them is kept",
}
# What an ingested table keeps: the columns the workflow reads, or every column of the source file.
INGEST_COLUMNS = ("needed", "all")
EXCLUSIONS_SCHEMA = "line BIGINT, subject_id BIGINT, reason VARCHAR, detail VARCHAR"


# A needed column may lose at most this share of a table's rows to unreadable or empty values (a larger share means the
# file is in another format, e.g. day-first dates, rather than that a few rows are bad).
MAX_REJECTED_SHARE = 0.01


class SourceError(RuntimeError):
    """A source file is missing or does not have the layout of the real download."""


class RejectedShareError(SourceError):
    """A needed column of a source file could not be read in more than the allowed share of its rows."""


def value_shape(value: str) -> str:
    """The shape of a raw value with its content masked (digits -> 9, letters -> a or A), so that an error can show
    the format of a patient value (``2196-02-24T14:38:00+02`` -> ``9999-99-99A99:99:99+99``) but not the value."""
    return "".join("9" if c.isdigit() else ("A" if c.isupper() else "a") if c.isalpha() else c for c in value)


def read_header(path: Path) -> list[str]:
    """The header of a CSV (or CSV.gz) file; an error when the file cannot be read, is empty or has a header
    but no data row (every table the workflow reads has rows in a real release)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as stream:
            line = stream.readline()
            first_row = stream.readline()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise SourceError(f"{path}: cannot be read ({err})") from err
    if not line.strip():
        raise SourceError(f"{path}: empty file (expected a CSV header line)")
    if not first_row.strip():
        raise SourceError(f"{path}: header only, no data rows")
    return [name.strip().strip('"') for name in line.rstrip("\r\n").split(",")]


def check_source_table(name: str, path: Path | str) -> list[str]:
    """Check that a source file exists, can be read, has rows and the columns the workflow needs; return
    its header."""
    table = TABLES[name]
    path = Path(path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as err:  # e.g. a folder on the way that this user may not enter
        raise SourceError(f"{path}: cannot be read ({err})") from err
    if is_dir:
        raise SourceError(f"{path}: is a directory, not a file. Expected {table.relpath} under the {table.layout_hint}")
    if not is_file:
        raise SourceError(f"{path}: missing. Expected {table.relpath} under the {table.layout_hint}")
    header = read_header(path)
    missing = [c for c in table.needed if c not in header]
    if missing:
        raise SourceError(
            f"{path}: missing column(s) {missing}; found {header}. "
            f"Expected the layout of {table.relpath} in the {table.layout_hint}"
        )
    return header


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _row_checks(table: SourceTable, row_columns: list[str], duplicates: bool = True) -> tuple[str, str]:
    """SQL expressions (reason, detail) naming why a row read from the CSV is excluded, NULL when it is kept.

    Checked in order: empty needed values, the table's own checks, then key duplicates (``duplicates``: two
    window functions, over the key and over whole rows of ``row_columns``, the columns kept). Details name columns,
    never values (they are patient data)."""
    cases: list[tuple[str, str, str]] = []
    if table.not_null:
        nulls = " OR ".join(f"{_quote(c)} IS NULL" for c in table.not_null)
        names = ", ".join(f"CASE WHEN {_quote(c)} IS NULL THEN {sql_literal(c)} END" for c in table.not_null)
        cases.append((nulls, "'missing_value'", f"'empty: ' || concat_ws(', ', {names})"))
    for reason, condition in table.checks:
        cases.append((f"NOT ({condition})", sql_literal(reason), sql_literal(f"fails {condition}")))
    if table.key and duplicates:
        key = ", ".join(_quote(c) for c in table.key)
        row = ", ".join(_quote(c) for c in row_columns)
        # Rows sharing the key but not all their values: the key is ambiguous, none is kept. Exact copies:
        # the first is kept (all copies are the same bytes, so which one does not matter).
        per_key = f"count(*) OVER (PARTITION BY {key})"
        per_row = f"count(*) OVER (PARTITION BY {row})"
        copy_rank = f"row_number() OVER (PARTITION BY {row})"
        key_names = ", ".join(table.key)
        cases.append(
            (f"{per_key} > {per_row}", "'conflicting_duplicate'", f"'{key_names} shared by ' || {per_key} || ' rows'")
        )
        cases.append((f"{copy_rank} > 1", "'duplicate_row'", f"'copy of a row with the same {key_names}'"))
    if not cases:
        return "NULL::VARCHAR", "NULL::VARCHAR"
    reason = "CASE " + " ".join(f"WHEN {cond} THEN {r}" for cond, r, _ in cases) + " END"
    detail = "CASE " + " ".join(f"WHEN {cond} THEN {d}" for cond, _, d in cases) + " END"
    return reason, detail


def ingest_table(
    name: str,
    src: Path | str,
    out: Path | str,
    threads: int = 1,
    mem_mb: int | None = None,
    temp_dir: Path | str | None = None,
    exclusions_out: Path | str | None = None,
    columns: str = "needed",
    max_rejected_share: float = MAX_REJECTED_SHARE,
) -> int:
    """Convert one source CSV to Parquet (zstd, sorted by subject and time); return the number of rows kept.

    ``columns``: ``needed`` keeps the columns the workflow reads (``SourceTable.needed``, in the file's order),
    ``all`` every column of the file. Sorting and writing cost in proportion to the row's width: for labevents
    the needed 9 of 16 columns take ~30% less time than all of them (the ingest's "converted once", docs/CURATION.md,
    then costs a re-ingest when a later concept needs another column, which ``all`` avoids).

    Rows that cannot be read or fail a row check go to ``exclusions_out`` (default: ``<out
    stem>.exclusions.parquet``) with the CSV line when known, the subject_id when readable, a reason
    from ``INGEST_EXCLUSIONS`` and the columns concerned; rows read = rows kept + rows excluded. Only the kept
    columns are read, so a value that cannot be read in a column the workflow does not use excludes nothing, and
    two rows with the same key are copies when they agree on the kept columns.

    A needed column whose unreadable plus empty values (empty only where every row must have one) exceed
    ``max_rejected_share`` of the rows read, or malformed lines above that share, raise ``RejectedShareError``;
    nothing is written then.
    """
    if columns not in INGEST_COLUMNS:
        raise ValueError(f"columns must be one of {INGEST_COLUMNS}, not {columns!r}")
    t0 = time.perf_counter()
    table = TABLES[name]
    src, out = Path(src), Path(out)
    exclusions_out = Path(exclusions_out) if exclusions_out else out.with_suffix(".exclusions.parquet")
    header = check_source_table(name, src)
    # Known columns get the real type; a column we do not know (a newer release) is read as text (kept with `all`).
    types = {c: table.columns.get(c, "VARCHAR") for c in header}
    declared = "{" + ", ".join(f"{sql_literal(c)}: {sql_literal(t)}" for c, t in types.items()) + "}"
    kept_columns = header if columns == "all" else [c for c in header if c in table.needed]
    select = ", ".join(_quote(c) for c in kept_columns)
    con = connect(threads, mem_mb, temp_dir)
    con.execute("SET preserve_insertion_order = true")
    # The dialect is fixed (no sniffing): a line DuckDB cannot parse or convert is stored in reject_errors.
    csv = (
        f"read_csv({sql_literal(str(src))}, auto_detect = false, header = true, delim = ',', quote = '\"', "
        f"escape = '\"', columns = {declared}, dateformat = '%Y-%m-%d', "
        f"store_rejects = true)"
    )
    order_by = ", ".join(table.order_by)
    # One sorted CSV -> Parquet pass writes every row that DuckDB could read; the row checks then run on that
    # file's few needed columns. A sound source (the usual case) has nothing to exclude and the file becomes
    # the table as it is; otherwise a second pass writes the kept rows (docs/FAULTS.md: none is silently lost).
    staged = out.with_suffix(".staged.parquet")
    checked = out.with_suffix(".checked.parquet")
    try:
        try:
            # zstd level 1: ~4% larger than the default level 3, ~0.5 s less of labevents' ~12 s at scale 0.1.
            copy_to_parquet(
                con, f"SELECT {select} FROM {csv} ORDER BY {order_by}", staged, sort=False, compression_level=1
            )
        except duckdb.Error as err:
            # The first line says what went wrong; the rest may quote a row (patient data): left out.
            message = str(err).splitlines()[0]
            raise SourceError(
                f"{src}: cannot be read as {table.relpath} of the {table.layout_hint} ({message})"
            ) from None
        # The duplicate checks are window functions over the key and over whole rows, which cost more than
        # reading the CSV (labevents: ~3x); they run only when a key repeats, which a sound source never does.
        duplicates = bool(table.key) and _repeats_a_key(con, staged, table.key)
        reason, detail = _row_checks(table, kept_columns, duplicates=duplicates)
        rows_sql = f"SELECT *, {reason} AS _reason, {detail} AS _detail FROM read_parquet({sql_literal(str(staged))})"
        if duplicates:  # window functions do not keep the row order: sort again
            copy_to_parquet(con, f"{rows_sql} ORDER BY {order_by}", checked, sort=False)
            rows_sql = f"SELECT * FROM read_parquet({sql_literal(str(checked))})"
        excluded = copy_to_parquet(con, _exclusions_sql(rows_sql, header, types), exclusions_out)
        # Rows that failed a check (rejected lines never reached the staged file; they have a line number).
        failing = con.execute(
            f"SELECT count(*) FROM read_parquet({sql_literal(str(exclusions_out))}) WHERE line IS NULL"
        ).fetchone()[0]
        if excluded:
            try:
                _check_rejected_share(con, src, table, staged, header, failing, max_rejected_share)
            except RejectedShareError:
                exclusions_out.unlink(missing_ok=True)
                raise
        if failing == 0 and not duplicates:
            staged.replace(out)
            rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_literal(str(out))})").fetchone()[0]
        else:
            kept = f"SELECT * EXCLUDE (_reason, _detail) FROM ({rows_sql}) WHERE _reason IS NULL"
            # preserve_insertion_order keeps the sort
            rows = copy_to_parquet(con, kept, out, sort=False, compression_level=1)
    finally:
        staged.unlink(missing_ok=True)
        checked.unlink(missing_ok=True)
    counts = con.execute(
        f"SELECT reason, count(*) FROM read_parquet({sql_literal(str(exclusions_out))}) GROUP BY reason ORDER BY reason"
    ).fetchall()
    log.info(
        "ingest %s: %d rows read, %d kept, %d excluded%s in %.1f s",
        name,
        rows + excluded,
        rows,
        excluded,
        " (" + ", ".join(f"{r}: {n}" for r, n in counts) + ")" if counts else "",
        time.perf_counter() - t0,
    )
    return rows


def _check_rejected_share(
    con: duckdb.DuckDBPyConnection,
    src: Path,
    table: SourceTable,
    staged: Path,
    header: list[str],
    failing: int,
    max_share: float,
) -> None:
    """Raise ``RejectedShareError`` when a needed column, or the file's line structure, lost more than ``max_share``
    of the rows read. Run only when something was excluded; it reads reject_errors and, for empty values, the
    staged columns every row must have."""
    staged_rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_literal(str(staged))})").fetchone()[0]
    rejected_lines = con.execute("SELECT count(DISTINCT line) FROM reject_errors").fetchone()[0]
    rows_read = staged_rows + rejected_lines
    unreadable = dict(
        con.execute(
            "SELECT column_name, count(DISTINCT line) FROM reject_errors WHERE error_type = 'CAST' GROUP BY column_name"
        ).fetchall()
    )
    empty: dict[str, int] = {}
    if failing and table.not_null:
        counts = ", ".join(f"count(*) FILTER (WHERE {_quote(c)} IS NULL)" for c in table.not_null)
        row = con.execute(f"SELECT {counts} FROM read_parquet({sql_literal(str(staged))})").fetchone()
        empty = dict(zip(table.not_null, row, strict=True))
    malformed = con.execute("SELECT count(DISTINCT line) FROM reject_errors WHERE error_type <> 'CAST'").fetchone()[0]
    problems = []
    for column in table.needed:
        lost = unreadable.get(column, 0) + empty.get(column, 0)
        if lost > max_share * rows_read:
            kind = table.columns.get(column, "VARCHAR")
            examples = _rejected_examples(con, column, header)
            what = f"{unreadable.get(column, 0)} unreadable as {kind}, {empty.get(column, 0)} empty"
            problems.append(f"column {column}: {lost} of {rows_read} rows ({lost / rows_read:.1%}; {what})" + examples)
    if malformed > max_share * rows_read:
        problems.append(f"{malformed} of {rows_read} lines malformed (wrong number of fields, quoting or encoding)")
    if problems:
        raise RejectedShareError(
            f"{src}: more than {max_share:.1%} of the rows lost in a needed column (config ingest.max_rejected_share), "
            f"so the file is not in the layout of {table.relpath} of the {table.layout_hint}; nothing was written. "
            + "; ".join(problems)
        )


def _rejected_examples(con: duckdb.DuckDBPyConnection, column: str, header: list[str], n: int = 3) -> str:
    """The first unreadable values of a column, masked (``value_shape``), with their lines."""
    rows = con.execute(
        "SELECT line, csv_line, column_idx FROM reject_errors WHERE error_type = 'CAST' AND column_name = ? "
        f"ORDER BY line LIMIT {n}",
        [column],
    ).fetchall()
    if not rows:
        return ""
    shapes = []
    for line, csv_line, column_idx in rows:
        try:  # DuckDB keeps a CRLF file's line with its line break
            fields = next(csv.reader([csv_line.strip("\r\n")]), [])
        except csv.Error:
            fields = []
        raw = fields[column_idx - 1] if 0 < column_idx <= len(fields) else "(not shown)"
        shapes.append(f"line {line}: {value_shape(raw)!r}")
    return " - first values, digits shown as 9 and letters as a/A: " + ", ".join(shapes)


def _repeats_a_key(con: duckdb.DuckDBPyConnection, staged: Path, key: Sequence[str]) -> bool:
    """Whether two staged rows share the table's key (one columnar pass over the key columns)."""
    columns = ", ".join(_quote(c) for c in key)
    sql = f"SELECT count(*) > 0 FROM (SELECT 1 FROM read_parquet({sql_literal(str(staged))}) GROUP BY {columns} "
    return bool(con.execute(sql + "HAVING count(*) > 1 LIMIT 1)").fetchone()[0])


def _exclusions_sql(rows_sql: str, header: list[str], types: dict[str, str]) -> str:
    """SQL: one row per excluded source row, from the checked rows' reasons (``rows_sql``: the rows read, with
    ``_reason`` and ``_detail``) and DuckDB's reject_errors (one row per rejected line; the subject_id is read
    from the line when it is a number)."""
    has_subject = "subject_id" in header
    subject = (
        f"TRY_CAST(split_part(csv_line, ',', {header.index('subject_id') + 1}) AS BIGINT)" if has_subject else "NULL"
    )
    declared = "CASE column_name " + " ".join(f"WHEN {sql_literal(c)} THEN {sql_literal(t)}" for c, t in types.items())
    return f"""
        SELECT NULL::BIGINT AS line, {"subject_id" if has_subject else "NULL"}::BIGINT AS subject_id,
               _reason AS reason, _detail AS detail
        FROM ({rows_sql})
        WHERE _reason IS NOT NULL
        UNION ALL
        SELECT CAST(line AS BIGINT),
               any_value({subject})::BIGINT,
               CASE WHEN bool_and(error_type = 'CAST') THEN 'unreadable_value' ELSE 'malformed_line' END,
               string_agg(DISTINCT CASE WHEN error_type = 'CAST' THEN column_name || ' is not a ' || ({declared} END)
                                        ELSE lower(CAST(error_type AS VARCHAR)) END, '; ')
        FROM reject_errors
        GROUP BY line
    """
