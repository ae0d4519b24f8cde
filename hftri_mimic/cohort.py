"""Cohort and labels (docs/CURATION.md, Cohort and Labels): one function per workflow rule, each running SQL concepts
from ``hftri_mimic/sql/`` over Parquet files and writing Parquet.

Trace of one patient: ``admission_age`` gives each admission an age; ``lab_admissions``,
``ecg_admissions`` and ``echo_admissions`` say which modalities it has; ``index_admissions`` keeps the
first (or last) admission that passes every required criterion and chooses its echo study and ECG;
``prevalent_hf`` and ``followup`` label it; ``assemble_cohort`` joins all into ``cohort.parquet``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import duckdb
import polars as pl

from hftri_mimic.db import concept_sql, connect, copy_to_parquet, register_parquet, run_concept, sql_literal

log = logging.getLogger(__name__)

MODALITIES = ("labs", "ecg", "echo")
ATTRITION_SCHEMA = {
    "reason_id": pl.Int64,
    "reason": pl.String,
    "n_records": pl.Int64,
    "n_subjects": pl.Int64,
    "excluded_records": pl.Int64,
    "excluded_subjects": pl.Int64,
}
COHORT_COLUMNS = [
    "subject_id",
    "hadm_id",
    "admittime",
    "dischtime",
    "age",
    "gender",
    "race",
    "prevalent_hf",
    "has_followup",
    "incident_hf",
    "followup_days",
    "ecg_study_id",
    "echo_study_id",
]


def like_patterns(codes: Sequence[str]) -> list[str]:
    """Config code patterns ('428*', 'I50*', '40201', 'I50.9') as upper-case, dot-free LIKE patterns."""
    return [code.replace(".", "").upper().replace("*", "%") for code in codes]


def lab_admissions(
    labevents: Path | str,
    out: Path | str,
    lab_itemids: Sequence[int],
    threads: int = 1,
    mem_mb: int | None = None,
    temp_dir: Path | str | None = None,
) -> int:
    con = connect(threads, mem_mb, temp_dir)
    register_parquet(con, labevents=labevents)
    n = copy_to_parquet(con, concept_sql("lab_admissions"), out, {"lab_itemids": [int(i) for i in lab_itemids]})
    log.info("admissions with a configured lab item: %d", n)
    return n


def _window_admissions(
    concept: str, tables: dict, out: Path | str, window: dict, threads: int, mem_mb: int | None
) -> int:
    con = connect(threads, mem_mb)
    register_parquet(con, **tables)
    params = {
        "start_offset_hours": float(window["start_offset_hours"]),
        "end_offset_hours": float(window["end_offset_hours"]),
    }
    n = copy_to_parquet(con, concept_sql(concept), out, params)
    log.info("%s: %d (admission, record) pairs", concept, n)
    return n


def ecg_admissions(
    admissions: Path | str,
    ecg_record_list: Path | str,
    out: Path | str,
    window: dict,
    threads: int = 1,
    mem_mb: int | None = None,
) -> int:
    return _window_admissions(
        "ecg_admissions", {"admissions": admissions, "ecg_record_list": ecg_record_list}, out, window, threads, mem_mb
    )


def echo_admissions(
    admissions: Path | str,
    echo_study_list: Path | str,
    out: Path | str,
    window: dict,
    threads: int = 1,
    mem_mb: int | None = None,
) -> int:
    return _window_admissions(
        "echo_admissions", {"admissions": admissions, "echo_study_list": echo_study_list}, out, window, threads, mem_mb
    )


def _empty_view(con: duckdb.DuckDBPyConnection, name: str, columns: str) -> None:
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {columns} WHERE false")


def index_admissions(
    admissions: Path | str,
    patients: Path | str,
    out: Path | str,
    attrition_out: Path | str,
    min_age: int,
    require_modalities: Sequence[str],
    order: str,
    lab_admissions: Path | str | None = None,
    ecg_admissions: Path | str | None = None,
    echo_admissions: Path | str | None = None,
    admission_exclusions: Path | str | None = None,
    threads: int = 1,
    mem_mb: int | None = None,
) -> int:
    """Apply cohort criteria 1-6 and write the index admission of each patient with its chosen records,
    plus the attrition rows of these steps.

    A modality in ``require_modalities`` must have its availability table; a modality whose table is
    given but not required still provides the chosen record (nullable ids).

    ``admission_exclusions`` (the admissions rows excluded at ingest, with their subject_id) makes the
    first step count every row of the source file. Two steps appear only when they exclude something:
    admission rows excluded at ingest, and admissions whose subject has no usable patients row.
    """
    available = {"labs": lab_admissions, "ecg": ecg_admissions, "echo": echo_admissions}
    for modality in require_modalities:
        if modality not in MODALITIES:
            raise ValueError(f"cohort.require_modalities: unknown modality {modality!r} (use {MODALITIES})")
        if available[modality] is None:
            raise ValueError(f"cohort.require_modalities asks for {modality!r} but the source has no {modality} data")
    con = connect(threads, mem_mb)
    register_parquet(con, admissions=admissions, patients=patients)
    if lab_admissions:
        register_parquet(con, lab_in_admission=lab_admissions)
    else:
        _empty_view(con, "lab_in_admission", "NULL::BIGINT AS hadm_id")
    if ecg_admissions:
        register_parquet(con, ecg_in_admission=ecg_admissions)
    else:
        _empty_view(
            con,
            "ecg_in_admission",
            "NULL::BIGINT AS hadm_id, NULL::BIGINT AS ecg_study_id, "
            "NULL::TIMESTAMP AS ecg_time, NULL::VARCHAR AS ecg_path",
        )
    if echo_admissions:
        register_parquet(con, echo_in_admission=echo_admissions)
    else:
        _empty_view(
            con,
            "echo_in_admission",
            "NULL::BIGINT AS hadm_id, NULL::BIGINT AS echo_study_id, NULL::TIMESTAMP AS echo_time",
        )
    if admission_exclusions:
        register_parquet(con, admission_exclusions=admission_exclusions)
    else:
        _empty_view(con, "admission_exclusions", "NULL::BIGINT AS subject_id")
    con.execute(f"CREATE TEMP TABLE aged AS {concept_sql('admission_age')}")
    # Anchor age and year are never empty after ingest, so a NULL age means the patients row is missing.
    con.execute(
        """
        CREATE TEMP TABLE flags AS
        SELECT a.*,
               true AS ingested,
               a.age IS NOT NULL AS has_patient,
               a.age >= $min_age AS is_adult,
               hadm_id IN (SELECT hadm_id FROM lab_in_admission) AS has_labs,
               hadm_id IN (SELECT hadm_id FROM ecg_in_admission) AS has_ecg,
               hadm_id IN (SELECT hadm_id FROM echo_in_admission) AS has_echo
        FROM aged AS a
        UNION ALL BY NAME
        SELECT subject_id, false AS ingested, false AS has_patient, false AS is_adult,
               false AS has_labs, false AS has_ecg, false AS has_echo
        FROM admission_exclusions
        """,
        {"min_age": int(min_age)},
    )
    steps = [("admissions in source", "true")]
    n_not_ingested, n_no_patient = con.execute(
        "SELECT count(*) FILTER (WHERE NOT ingested), count(*) FILTER (WHERE ingested AND NOT has_patient) FROM flags"
    ).fetchone()
    if n_not_ingested:
        steps.append(("admission row excluded at ingest (see parquet/admissions.exclusions.parquet)", "ingested"))
    if n_no_patient:
        steps.append(
            ("no usable patients row for the subject (see parquet/patients.exclusions.parquet)", "has_patient")
        )
    steps.append((f"age at admission < {min_age}", "is_adult"))
    reasons = {
        "labs": "no configured lab item during the admission",
        "ecg": "no ECG within the admission window",
        "echo": "no echo study within the admission window",
    }
    for modality in MODALITIES:
        if modality in require_modalities:
            steps.append((reasons[modality], f"has_{modality}"))
    attrition = _attrition_steps(con, steps)
    condition = " AND ".join(f for _, f in steps)
    con.execute(f"CREATE TEMP TABLE eligible AS SELECT * FROM flags WHERE {condition}")
    n = copy_to_parquet(con, concept_sql("index_admission"), out, {"order": order})
    last = attrition[-1]
    attrition.append(
        (
            len(attrition),
            f"not the index admission ({order} eligible admission per patient)",
            n,
            n,
            last[2] - n,
            last[3] - n,
        )
    )
    write_attrition(attrition, attrition_out)
    log.info("index admissions: %d patients (required: %s)", n, ", ".join(require_modalities))
    return n


def _attrition_steps(con: duckdb.DuckDBPyConnection, steps: list[tuple[str, str]]) -> list[tuple]:
    """Counts after each cumulative filter over the ``flags`` table."""
    rows: list[tuple] = []
    condition = "true"
    for reason_id, (reason, flag) in enumerate(steps):
        condition = f"{condition} AND {flag}"
        n_records, n_subjects = con.execute(
            f"SELECT count(*), count(DISTINCT subject_id) FROM flags WHERE {condition}"
        ).fetchone()
        prev_records, prev_subjects = (rows[-1][2], rows[-1][3]) if rows else (n_records, n_subjects)
        rows.append((reason_id, reason, n_records, n_subjects, prev_records - n_records, prev_subjects - n_subjects))
    return rows


def write_attrition(rows: list[tuple], out: Path | str) -> None:
    frame = pl.DataFrame(rows, schema=ATTRITION_SCHEMA, orient="row")
    frame.write_parquet(out)


def hf_admissions(
    diagnoses_icd: Path | str,
    out: Path | str,
    icd9: Sequence[str],
    icd10: Sequence[str],
    threads: int = 1,
    mem_mb: int | None = None,
) -> int:
    con = connect(threads, mem_mb)
    register_parquet(con, diagnoses_icd=diagnoses_icd)
    n = copy_to_parquet(
        con,
        concept_sql("hf_admissions"),
        out,
        {"icd9_patterns": like_patterns(icd9), "icd10_patterns": like_patterns(icd10)},
    )
    log.info("admissions with a heart-failure code: %d", n)
    return n


def prevalent_hf(
    index_admissions: Path | str,
    admissions: Path | str,
    hf_admissions: Path | str,
    out: Path | str,
    lookback_days: int | None,
) -> int:
    con = connect()
    register_parquet(con, index_admissions=index_admissions, admissions=admissions, hf_admissions=hf_admissions)
    n = copy_to_parquet(con, concept_sql("prevalent_hf"), out, {"lookback_days": lookback_days})
    n_hf = con.execute(f"SELECT count(*) FROM read_parquet({sql_literal(str(out))}) WHERE prevalent_hf").fetchone()[0]
    log.info("prevalent heart failure: %d of %d patients", n_hf, n)
    return n


def followup(
    index_admissions: Path | str,
    prevalent_hf: Path | str,
    admissions: Path | str,
    patients: Path | str,
    hf_admissions: Path | str,
    out: Path | str,
    min_days: int,
    censor_at_death: bool,
) -> int:
    con = connect()
    register_parquet(
        con,
        index_admissions=index_admissions,
        prevalent_hf=prevalent_hf,
        admissions=admissions,
        patients=patients,
        hf_admissions=hf_admissions,
    )
    n = copy_to_parquet(
        con, concept_sql("followup"), out, {"min_days": int(min_days), "censor_at_death": bool(censor_at_death)}
    )
    n_follow, n_incident = con.execute(
        "SELECT count(*) FILTER (WHERE has_followup), count(*) FILTER (WHERE incident_hf) "
        f"FROM read_parquet({sql_literal(str(out))})"
    ).fetchone()
    log.info("follow-up: %d of %d patients followed, %d incident heart failure", n_follow, n, n_incident)
    return n


def assemble_cohort(
    index_admissions: Path | str,
    prevalent_hf: Path | str,
    followup: Path | str,
    attrition: Path | str,
    out: Path | str,
    attrition_out: Path | str,
) -> pl.DataFrame:
    """Join the index admissions with their labels into ``cohort.parquet`` (one row per patient)."""
    index = pl.read_parquet(index_admissions)
    cohort = (
        index.join(pl.read_parquet(prevalent_hf).select("subject_id", "prevalent_hf"), on="subject_id", how="left")
        .join(
            pl.read_parquet(followup).select("subject_id", "has_followup", "incident_hf", "followup_days"),
            on="subject_id",
            how="left",
        )
        .select([*COHORT_COLUMNS, "ecg_time", "ecg_path", "echo_time"])
        .sort("subject_id")
    )
    if cohort.height != index.height or cohort["prevalent_hf"].null_count():
        raise RuntimeError("labels do not cover every index admission")
    steps = pl.read_parquet(attrition)
    check_attrition(steps)
    cohort.write_parquet(out)
    steps.write_parquet(attrition_out)
    n_prev = int(cohort["prevalent_hf"].sum())
    n_follow = int(cohort["has_followup"].sum())
    n_inc = int(cohort["incident_hf"].fill_null(False).sum())
    log.info(
        "cohort: %d patients, %d prevalent / %d non-prevalent HF; %d with follow-up, %d incident / %d not",
        cohort.height,
        n_prev,
        cohort.height - n_prev,
        n_follow,
        n_inc,
        n_follow - n_inc,
    )
    return cohort


def check_attrition(steps: pl.DataFrame) -> None:
    """Each step's counts must equal the previous counts minus what the step excluded."""
    rows = steps.sort("reason_id").rows(named=True)
    for prev, row in pairwise(rows):
        for unit in ("records", "subjects"):
            if row[f"n_{unit}"] != prev[f"n_{unit}"] - row[f"excluded_{unit}"]:
                raise RuntimeError(
                    f"attrition does not reconcile at step {row['reason_id']} ({row['reason']}): "
                    f"{unit} {prev[f'n_{unit}']} - {row[f'excluded_{unit}']} != {row[f'n_{unit}']}"
                )


__all__ = [
    "assemble_cohort",
    "check_attrition",
    "ecg_admissions",
    "echo_admissions",
    "extend_attrition",
    "followup",
    "hf_admissions",
    "index_admissions",
    "lab_admissions",
    "like_patterns",
    "prevalent_hf",
    "run_concept",
]


def extend_attrition(
    attrition: Path | str, out: Path | str, stages: Sequence[tuple[str, Path | str, dict[str, str], bool]]
) -> pl.DataFrame:
    """Append the signal-quality exclusions of the ECG/echo stages to the cohort attrition.

    ``stages``: (label, exclusions parquet with subject_id and reason, reason code -> description, required).
    A required modality's exclusion removes the patient (one row per reason, in the code order given);
    for a modality that is not required the patient stays, so no row is added.
    """
    rows = pl.read_parquet(attrition).sort("reason_id").rows()
    removed: set[int] = set()
    for label, exclusions, reasons, required in stages:
        if not required:
            continue
        table = pl.read_parquet(exclusions, columns=["subject_id", "reason"])
        for code, description in reasons.items():
            subjects = set(table.filter(pl.col("reason") == code)["subject_id"].to_list()) - removed
            if not subjects:
                continue
            removed |= subjects
            _, _, n_records, n_subjects, _, _ = rows[-1]
            n = len(subjects)
            rows.append((len(rows), f"{label}: {description}", n_records - n, n_subjects - n, n, n))
    frame = pl.DataFrame(rows, schema=ATTRITION_SCHEMA, orient="row")
    check_attrition(frame)
    frame.write_parquet(out)
    return frame
