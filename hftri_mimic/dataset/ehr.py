"""EHR features of each cohort patient (docs/CURATION.md, Dataset), one SQL concept per feature family: lab values at
the reference time, height/weight/BMI from omr, medical-history groups, drug-history classes.

The reference time is the moment the multimodal snapshot describes: the chosen echo study by default
(``dataset.reference_time``), falling back to the chosen ECG, then to the admission time. When it falls
back to the admission time (a hosp-only cohort), lab values are the ones closest to admission and the
storetime rule does not apply (nothing is stored before admission).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb

from hftri_mimic.cohort.concepts import like_patterns
from hftri_mimic.common.db import concept_sql, connect, copy_to_parquet, register_parquet

log = logging.getLogger(__name__)

REFERENCE_ORDER = {
    "echo": ("coalesce(echo_time, ecg_time, admittime)", "echo_time IS NOT NULL OR ecg_time IS NOT NULL"),
    "ecg": ("coalesce(ecg_time, echo_time, admittime)", "echo_time IS NOT NULL OR ecg_time IS NOT NULL"),
    "admission": ("admittime", "false"),
}


def _reference_view(con: duckdb.DuckDBPyConnection, index_admissions: Path | str, reference: str) -> None:
    if reference not in REFERENCE_ORDER:
        raise ValueError(f"dataset.reference_time must be one of {sorted(REFERENCE_ORDER)}, got {reference!r}")
    register_parquet(con, index_admissions=index_admissions)
    time, is_record = REFERENCE_ORDER[reference]
    con.execute(
        f"CREATE TEMP TABLE reference AS SELECT subject_id, hadm_id, admittime, dischtime, "
        f"{time} AS reference_time, {is_record} AS reference_is_record FROM index_admissions"
    )


def lab_values(
    index_admissions: Path | str,
    labevents: Path | str,
    d_labitems: Path | str,
    out: Path | str,
    lab_itemids: Sequence[int],
    reference: str,
    storetime_before_reference: bool,
    threads: int = 1,
    mem_mb: int | None = None,
    exclusions_out: Path | str | None = None,
) -> int:
    """Each patient's value of each configured item (``out``), and the candidate rows that are not results
    (``exclusions_out``, default ``<out stem>.exclusions.parquet``: subject_id, itemid, labevent_id,
    charttime, reason), so that candidate rows = results + exclusions."""
    exclusions_out = exclusions_out or Path(out).with_suffix(".exclusions.parquet")
    con = connect(threads, mem_mb)
    _reference_view(con, index_admissions, reference)
    register_parquet(con, labevents=labevents, d_labitems=d_labitems)
    con.execute(
        f"CREATE TEMP TABLE lab_candidates AS {concept_sql('lab_candidates')}",
        {"lab_itemids": [int(i) for i in lab_itemids], "storetime_before_reference": bool(storetime_before_reference)},
    )
    n = copy_to_parquet(con, concept_sql("lab_values"), out)
    copy_to_parquet(
        con,
        "SELECT subject_id, itemid, labevent_id, charttime, exclusion AS reason FROM lab_candidates "
        "WHERE exclusion IS NOT NULL",
        exclusions_out,
    )
    counts = dict(
        con.execute(
            "SELECT coalesce(exclusion, 'result'), count(*) FROM lab_candidates GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    )
    n_results = counts.pop("result", 0)
    log.info(
        "lab values: %d candidate rows = %d results + %d not a result %s; %d (patient, item) values",
        n_results + sum(counts.values()),
        n_results,
        sum(counts.values()),
        counts,
        n,
    )
    return n


def omr_measures(index_admissions: Path | str, omr: Path | str, out: Path | str) -> int:
    con = connect()
    _reference_view(con, index_admissions, "admission")
    register_parquet(con, omr=omr)
    n = copy_to_parquet(con, concept_sql("omr_measures"), out)
    log.info("omr measures: %d (patient, measure) values", n)
    return n


def history_groups(
    index_admissions: Path | str,
    admissions: Path | str,
    diagnoses_icd: Path | str,
    out: Path | str,
    groups: Mapping[str, Mapping[str, Sequence[str]]],
    include_index_admission: bool,
) -> int:
    rows = [
        {"name": name, "icd_version": version, "pattern": pattern}
        for name, codes in groups.items()
        for version, key in ((9, "icd9"), (10, "icd10"))
        for pattern in like_patterns(codes.get(key, []))
    ]
    con = connect()
    _reference_view(con, index_admissions, "admission")
    register_parquet(con, admissions=admissions, diagnoses_icd=diagnoses_icd)
    n = copy_to_parquet(
        con,
        concept_sql("history_groups"),
        out,
        {"groups": rows, "include_index_admission": bool(include_index_admission)},
    )
    log.info("medical history: %d (patient, group) rows", n)
    return n


def drug_classes(
    index_admissions: Path | str,
    prescriptions: Path | str,
    out: Path | str,
    classes: Mapping[str, Sequence[str]],
    reference: str,
    before_admission: bool,
) -> int:
    rows = [{"name": name, "pattern": pattern} for name, patterns in classes.items() for pattern in patterns]
    con = connect()
    _reference_view(con, index_admissions, reference)
    register_parquet(con, prescriptions=prescriptions)
    n = copy_to_parquet(
        con, concept_sql("drug_classes"), out, {"classes": rows, "before_admission": bool(before_admission)}
    )
    log.info("drug history: %d (patient, class) rows", n)
    return n
