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

from hftri_mimic.common.db import concept_sql, connect, copy_to_parquet, register_parquet, run_concept, sql_literal
from hftri_mimic.common.storage import write_parquet_atomic

log = logging.getLogger(__name__)

MODALITIES = ("lab", "ecg", "echo")
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


# Records within this many hours of a window, but outside every window, are counted apart (window_records.sql): the
# emergency-department records and machine clock offsets a wider window or start_from edregtime would take in.
NEAR_WINDOW_HOURS = 24.0
WINDOW_PLACES = {
    "in_window": "inside an admission's window",
    "before_window": f"within {NEAR_WINDOW_HOURS:.0f} h before a window (ED before admittime, or a clock behind)",
    "after_window": f"within {NEAR_WINDOW_HOURS:.0f} h after a window (a clock ahead, or after discharge)",
    "away_from_admissions": "further from every admission (outpatient)",
    "no_admission": "the patient has no admission",
}


def _admission_windows(con: duckdb.DuckDBPyConnection, window: dict) -> None:
    """The temp table admission_windows: one window per admission, as configured (cohort.<modality>_window)."""
    params = {
        "start_from": str(window.get("start_from", "admittime")),
        "start_offset_hours": float(window["start_offset_hours"]),
        "end_offset_hours": float(window["end_offset_hours"]),
    }
    if params["start_from"] not in ("admittime", "edregtime"):
        raise ValueError(f"window start_from must be 'admittime' or 'edregtime', got {params['start_from']!r}")
    con.execute(f"CREATE TEMP TABLE admission_windows AS {concept_sql('admission_windows')}", params)


def _window_admissions(
    concept: str,
    tables: dict,
    out: Path | str,
    window: dict,
    threads: int,
    mem_mb: int | None,
    record_time: str,
    places_out: Path | str | None,
) -> int:
    con = connect(threads, mem_mb)
    register_parquet(con, **tables)
    _admission_windows(con, window)
    n = copy_to_parquet(con, concept_sql(concept), out)
    log.info("%s: %d (admission, record) pairs", concept, n)
    records = next(name for name in tables if name != "admissions")
    con.execute(
        "CREATE TEMP VIEW records AS "
        f"SELECT row_number() OVER () AS record_id, subject_id, {record_time} AS record_time FROM {records}"
    )
    rows = con.execute(concept_sql("window_records"), {"near_hours": NEAR_WINDOW_HOURS}).fetchall()
    places = pl.DataFrame(
        rows, schema={"place": pl.String, "n_records": pl.Int64, "n_subjects": pl.Int64}, orient="row"
    ).with_columns(description=pl.col("place").replace_strict(WINDOW_PLACES, return_dtype=pl.String))
    if places_out is not None:
        write_parquet_atomic(places, places_out)
    log.info(
        "%s records against the admission windows: %s",
        records,
        ", ".join(f"{place} {n_records}" for place, n_records in places.select("place", "n_records").rows()),
    )
    return n


def ecg_admissions(
    admissions: Path | str,
    ecg_record_list: Path | str,
    out: Path | str,
    window: dict,
    threads: int = 1,
    mem_mb: int | None = None,
    places_out: Path | str | None = None,
) -> int:
    """(admission, ECG) pairs of ECGs inside the admission's window; ``places_out``: where the record list's ECGs
    fall against the windows (counts per place, ``WINDOW_PLACES``)."""
    tables = {"admissions": admissions, "ecg_record_list": ecg_record_list}
    return _window_admissions("ecg_admissions", tables, out, window, threads, mem_mb, "ecg_time", places_out)


def echo_admissions(
    admissions: Path | str,
    echo_study_list: Path | str,
    out: Path | str,
    window: dict,
    threads: int = 1,
    mem_mb: int | None = None,
    places_out: Path | str | None = None,
) -> int:
    """(admission, echo study) pairs of studies inside the admission's window; ``places_out`` as for ECGs."""
    tables = {"admissions": admissions, "echo_study_list": echo_study_list}
    return _window_admissions("echo_admissions", tables, out, window, threads, mem_mb, "study_datetime", places_out)


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
    *,
    eligibility_out: Path | str,
    threads: int = 1,
    mem_mb: int | None = None,
    allow_empty: bool = False,
) -> int:
    """Apply cohort criteria 1-6 and write the index admission of each patient with its chosen records,
    plus the attrition rows of these steps, computed from the eligibility table (``eligibility_out``: one row per
    admissions row of the source, one column per criterion, the first it failed and its attrition step).

    A modality in ``require_modalities`` must have its availability table; a modality whose table is
    given but not required still provides the chosen record (nullable ids).

    ``admission_exclusions`` (the admissions rows excluded at ingest, with their subject_id) makes the
    first step count every row of the source file. Two steps appear only when they exclude something:
    admission rows excluded at ingest, and admissions whose subject has no usable patients row.

    No patient left, or a required modality without any record in an admission window, raises ``EmptyCohortError``
    (a run on a source that does not fit must not end as an empty success); ``allow_empty`` is for tests of single
    criteria on one-patient sources.
    """
    available = {"lab": lab_admissions, "ecg": ecg_admissions, "echo": echo_admissions}
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
    if not allow_empty:
        _check_required_records(con, require_modalities)
    con.execute(f"CREATE TEMP TABLE aged AS {concept_sql('admission_age')}")
    criteria = {"min_age": int(min_age), **{f"require_{m}": m in require_modalities for m in MODALITIES}}
    con.execute(f"CREATE TEMP TABLE eligibility AS {concept_sql('admission_eligibility')}", criteria)
    con.execute("CREATE TEMP VIEW eligible AS SELECT * FROM eligibility WHERE first_failed IS NULL")
    n = copy_to_parquet(con, concept_sql("index_admission"), out, {"order": order})
    eligibility = con.sql(_MARK_INDEX.format(index=sql_literal(str(out)))).pl()
    steps = cohort_steps(eligibility, min_age, require_modalities, order)
    eligibility = with_attrition_steps(eligibility, steps)
    write_parquet_atomic(eligibility, eligibility_out)
    rows = attrition_rows(eligibility, steps)
    if n == 0 and not allow_empty:
        raise EmptyCohortError(
            "the cohort is empty: no admission passes every criterion, so there is nothing to build a dataset from. "
            "Attrition (step: patients left): "
            + "; ".join(f"{reason}: {subjects}" for _, reason, _, subjects, *_ in rows)
        )
    write_attrition(rows, attrition_out)
    log.info("index admissions: %d patients (required: %s)", n, ", ".join(require_modalities))
    return n


class EmptyCohortError(RuntimeError):
    """No patient is left (in the cohort, or of a required modality): an error, never an empty success."""


# The availability view of each modality and where its records come from (for the error when none is left).
_AVAILABILITY = {
    "lab": ("lab_in_admission", "no configured lab item (cohort.lab_itemids) was measured during any admission"),
    "ecg": ("ecg_in_admission", "no ECG of the record list falls within any admission's window (cohort.ecg_window)"),
    "echo": (
        "echo_in_admission",
        "no echo study of the study list falls within any admission's window (cohort.echo_window)",
    ),
}


def _check_required_records(con: duckdb.DuckDBPyConnection, require_modalities: Sequence[str]) -> None:
    """A required modality whose availability table is empty leaves no patient: say which, and why."""
    for modality in require_modalities:
        view, why = _AVAILABILITY[modality]
        if con.execute(f"SELECT count(*) FROM {view}").fetchone()[0] == 0:
            raise EmptyCohortError(f"cohort.require_modalities has {modality!r}, but {why}: the cohort would be empty")


# The eligibility table with is_index; an eligible admission that is not its patient's index admission fails the
# last criterion, is_index.
_MARK_INDEX = """
WITH marked AS (
    SELECT e.*, coalesce(e.hadm_id IN (SELECT hadm_id FROM read_parquet({index})), false) AS is_index
    FROM eligibility AS e
)
SELECT * EXCLUDE (first_failed),
       CASE WHEN first_failed IS NULL AND NOT is_index THEN 'is_index' ELSE first_failed END AS first_failed
FROM marked
ORDER BY subject_id, admittime NULLS LAST, hadm_id NULLS LAST
"""


# Attrition wording of each criterion of hftri_mimic/sql/admission_eligibility.sql (and of is_index).
CRITERION_REASONS = {
    "ingested": "admission row excluded at ingest (see parquet/admissions.exclusions.parquet)",
    "has_patient": "no usable patients row for the subject (see parquet/patients.exclusions.parquet)",
    "is_adult": "age at admission < {min_age}",
    "has_lab": "no configured lab item during the admission",
    "has_ecg": "no ECG within the admission window",
    "has_echo": "no echo study within the admission window",
    "is_index": "not the index admission ({order} eligible admission per patient)",
}


def cohort_steps(
    eligibility: pl.DataFrame, min_age: int, require_modalities: Sequence[str], order: str
) -> list[tuple[str, str | None]]:
    """(reason, criterion) of each attrition step, in the order the criteria apply; the first step (criterion None)
    counts every admissions row of the source. Two steps appear only when they exclude something: admission rows
    excluded at ingest and admissions whose subject has no usable patients row."""
    failed = set(eligibility["first_failed"].drop_nulls().to_list())
    criteria = [c for c in ("ingested", "has_patient") if c in failed]
    criteria += ["is_adult", *(f"has_{m}" for m in MODALITIES if m in require_modalities), "is_index"]
    reasons = {c: text.format(min_age=min_age, order=order) for c, text in CRITERION_REASONS.items()}
    return [("admissions in source", None), *((reasons[c], c) for c in criteria)]


def with_attrition_steps(eligibility: pl.DataFrame, steps: list[tuple[str, str | None]]) -> pl.DataFrame:
    """``reason_id`` and ``reason``: the attrition step at which each admission leaves (null for index
    admissions)."""
    step_of = {criterion: (reason_id, reason) for reason_id, (reason, criterion) in enumerate(steps) if criterion}
    unknown = set(eligibility["first_failed"].drop_nulls().unique().to_list()) - set(step_of)
    if unknown:
        raise RuntimeError(f"admissions failed criteria that are not attrition steps: {sorted(unknown)}")
    ids = {criterion: reason_id for criterion, (reason_id, _) in step_of.items()}
    texts = {criterion: reason for criterion, (_, reason) in step_of.items()}
    return eligibility.with_columns(
        reason_id=pl.col("first_failed").replace_strict(ids, default=None, return_dtype=pl.Int64),
        reason=pl.col("first_failed").replace_strict(texts, default=None, return_dtype=pl.String),
    )


def attrition_rows(eligibility: pl.DataFrame, steps: list[tuple[str, str | None]]) -> list[tuple]:
    """The attrition table computed from the eligibility table: after step k remain the admissions that leave at
    a later step or not at all, and the patients with at least one such admission."""
    rows: list[tuple] = []
    for reason_id, (reason, _) in enumerate(steps):
        left = eligibility.filter(pl.col("reason_id").is_null() | (pl.col("reason_id") > reason_id))
        n_records, n_subjects = left.height, left["subject_id"].n_unique()
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
    "patient_status",
    "prevalent_hf",
    "run_concept",
]


def extend_attrition(
    attrition: Path | str, out: Path | str, stages: Sequence[tuple[str, Path | str, dict[str, str], bool]]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Append the signal-quality exclusions of the ECG/echo stages to the cohort attrition.

    ``stages``: (label, exclusions parquet with subject_id and reason, reason code -> description, required).
    A required modality's exclusion removes the patient (one row per reason, in the code order given);
    for a modality that is not required the patient stays, so no row is added.
    Returns the attrition and the patients the stages removed (subject_id, stage, criterion, reason_id, reason).
    """
    rows = pl.read_parquet(attrition).sort("reason_id").rows()
    removed: dict[int, tuple[str, str, int, str]] = {}
    for label, exclusions, reasons, required in stages:
        if not required:
            continue
        table = pl.read_parquet(exclusions, columns=["subject_id", "reason"])
        for code, description in reasons.items():
            subjects = set(table.filter(pl.col("reason") == code)["subject_id"].to_list()) - set(removed)
            if not subjects:
                continue
            reason_id, reason = len(rows), f"{label}: {description}"
            removed.update({subject: (label, code, reason_id, reason) for subject in subjects})
            _, _, n_records, n_subjects, _, _ = rows[-1]
            n = len(subjects)
            rows.append((reason_id, reason, n_records - n, n_subjects - n, n, n))
    frame = pl.DataFrame(rows, schema=ATTRITION_SCHEMA, orient="row")
    check_attrition(frame)
    frame.write_parquet(out)
    stage_removed = pl.DataFrame(
        [(subject, *values) for subject, values in sorted(removed.items())],
        schema={"subject_id": pl.Int64, **STATUS_SCHEMA},
        orient="row",
    )
    return frame, stage_removed


STATUS_SCHEMA = {"stage": pl.String, "criterion": pl.String, "reason_id": pl.Int64, "reason": pl.String}


def patient_status(
    eligibility: Path | str,
    stage_removed: pl.DataFrame,
    attrition: pl.DataFrame,
    manifest: Path | str,
    out: Path | str,
) -> pl.DataFrame:
    """Why is this patient (not) in the dataset: one row per subject of the source's admissions rows.

    ``in_dataset`` patients are the manifest's; every other patient has exactly one reason, the attrition step
    at which they left: in the cohort, the criterion that their furthest admission failed (``stage`` cohort,
    ``criterion`` a column of ``cohort/eligibility.parquet``), else the ECG or echo stage exclusion that removed
    them (``criterion`` the stage's reason code). The counts per reason equal the attrition table's excluded
    patients, and the patients left equal the manifest's; anything else is an error.
    """
    admissions = pl.read_parquet(eligibility, columns=["subject_id", "first_failed", "reason_id", "reason"])
    furthest = (
        admissions.with_columns(step=pl.col("reason_id").fill_null(attrition.height))
        .sort("subject_id", "step")
        .group_by("subject_id", maintain_order=True)
        .last()
    )
    cohort_left = furthest.filter(pl.col("reason_id").is_not_null()).select(
        "subject_id", stage=pl.lit("cohort"), criterion="first_failed", reason_id="reason_id", reason="reason"
    )
    status = (
        furthest.select("subject_id")
        .join(pl.concat([cohort_left, stage_removed]), on="subject_id", how="left")
        .with_columns(in_dataset=pl.col("reason_id").is_null())
        .select("subject_id", "in_dataset", *STATUS_SCHEMA)
        .sort("subject_id")
    )
    kept = set(status.filter(pl.col("in_dataset"))["subject_id"].to_list())
    in_manifest = set(pl.read_parquet(manifest, columns=["subject_id"])["subject_id"].to_list())
    if kept != in_manifest:
        raise RuntimeError(
            f"patients left after every exclusion ({len(kept)}) are not the manifest's ({len(in_manifest)}): "
            f"{len(kept - in_manifest)} kept but not in the manifest, {len(in_manifest - kept)} the other way"
        )
    per_step = dict(status.drop_nulls("reason_id").group_by("reason_id").len().iter_rows())
    for row in attrition.iter_rows(named=True):
        if row["reason_id"] and per_step.get(row["reason_id"], 0) != row["excluded_subjects"]:
            raise RuntimeError(
                f"attrition step {row['reason_id']} ({row['reason']}) excluded {row['excluded_subjects']} patients, "
                f"the patient table gives it {per_step.get(row['reason_id'], 0)}"
            )
    write_parquet_atomic(status, out)
    log.info(
        "patients: %d in the dataset, %d excluded, each with one reason (%s)",
        len(kept),
        status.height - len(kept),
        out,
    )
    return status
