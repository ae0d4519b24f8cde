"""Row counts of MIMIC-IV v3.1 for the demo generator's ``scale`` mode (the benchmark sources, issue #10).

The demo's population is built around cardiac admissions: every patient has one, with labs drawn at the
rates of those stays, so at scale 1.0 it would write 1.54x v3.1's admissions and 0.78x its labevents. The
benchmarks measure costs that follow row counts, so each scale-mode chunk is brought to v3.1's rows per patient
(docs/CURATION.md, Sources) here, after the demo's own tables are drawn and with a random stream of its own (the
default demo, which has no ``scale``, never comes here and keeps its tables and planted signal unchanged):

- admissions: all admissions of randomly chosen patients are dropped, with their diagnoses, prescriptions and
  in-hospital labs, until the chunk has v3.1's admissions per patient; those patients keep their patients row,
  outpatient labs, OMR and ECG/echo records (about 39% of v3.1's patients have no hospital admission);
- diagnoses_icd: extra secondary codes (the demo's non-cardiac filler codes) on the remaining admissions;
- labevents: extra outpatient draws (``hadm_id`` empty), copies of the patient's own draws moved 30 days to
  4 years earlier, with a new specimen;
- omr: copies of the patient's own measurements on other dates;
- prescriptions: repeat orders within the same admission, started up to three days later, without a POE order.

The record lists follow MIMIC-IV-ECG v1.0 and MIMIC-IV-ECHO v0.1 (docs/CURATION.md, Sources: about 800k ECGs;
7,243 echo studies with about 525k DICOMs) per MIMIC-IV patient: a random part of the demo's ECGs and echo studies
is kept (echo is rare in the real archive: one study per ~50 patients), and each kept study gets more DICOMs
(repeated views, as real studies hold 50-100), numbered on from its own.

Each table stays sorted as the generator writes it and keeps its own id sequences.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from hftri_mimic.demo.hosp import numbered_in_file_order
from hftri_mimic.demo.records import dicom_filepath
from hftri_mimic.demo.vocab import FILLER

V31_ROWS = {
    "patients": 364_627,
    "admissions": 546_028,
    "diagnoses_icd": 6_364_488,
    "labevents": 158_374_764,
    "omr": 7_753_027,
    "prescriptions": 20_292_611,
}


# MIMIC-IV-ECG v1.0 and MIMIC-IV-ECHO v0.1 as docs/CURATION.md, Sources gives them (ECGs and DICOMs: "about").
RECORD_ROWS = {"ecg_records": 800_000, "echo_studies": 7_243, "echo_dicoms": 525_000}


def v31_rows(table: str, patients: int) -> int:
    """Rows of ``table`` that ``patients`` patients have in MIMIC-IV v3.1, at its rows per patient."""
    rows = V31_ROWS[table] if table in V31_ROWS else RECORD_ROWS[table]
    return round(rows * patients / V31_ROWS["patients"])


def calibrate_chunk(rng: np.random.Generator, tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """One chunk's hosp tables with v3.1's rows per patient (see the module docstring)."""
    patients = tables["patients"].height
    tables = _drop_admitted_patients(rng, tables, v31_rows("admissions", patients))
    tables["diagnoses_icd"] = _more_diagnoses(rng, tables["diagnoses_icd"], v31_rows("diagnoses_icd", patients))
    tables["labevents"] = _more_outpatient_labs(rng, tables["labevents"], v31_rows("labevents", patients))
    tables["omr"] = _more_omr(rng, tables["omr"], v31_rows("omr", patients))
    tables["prescriptions"] = _more_prescriptions(rng, tables["prescriptions"], v31_rows("prescriptions", patients))
    return tables


def _drop_admitted_patients(rng: np.random.Generator, tables: dict[str, pl.DataFrame], target: int) -> dict:
    admissions = tables["admissions"]
    if admissions.height <= target:
        return tables
    per_subject = admissions.group_by("subject_id", maintain_order=True).len()
    order = rng.permutation(per_subject.height)
    removed = np.cumsum(per_subject["len"].to_numpy()[order])
    n_drop = int(np.searchsorted(removed, admissions.height - target)) + 1
    dropped = pl.Series(per_subject["subject_id"].to_numpy()[order[:n_drop]])
    dropped_hadm = admissions.filter(pl.col("subject_id").is_in(dropped.implode()))["hadm_id"]
    in_dropped = pl.col("hadm_id").is_in(dropped_hadm.implode())
    return tables | {
        "admissions": admissions.filter(~pl.col("subject_id").is_in(dropped.implode())),
        "diagnoses_icd": tables["diagnoses_icd"].filter(~in_dropped),
        "labevents": tables["labevents"].filter(pl.col("hadm_id").is_null() | ~in_dropped),
        "prescriptions": tables["prescriptions"].filter(~in_dropped),
    }


def _sample_rows(rng: np.random.Generator, frame: pl.DataFrame, n: int) -> pl.DataFrame:
    return frame[rng.integers(0, frame.height, n)]


def _more_diagnoses(rng: np.random.Generator, diagnoses: pl.DataFrame, target: int) -> pl.DataFrame:
    extra = target - diagnoses.height
    if extra <= 0 or diagnoses.is_empty():
        return diagnoses
    copies = _sample_rows(rng, diagnoses, extra)
    version = copies["icd_version"].to_numpy()
    codes = {v: np.array([code for code, _ in FILLER[v]], dtype=object) for v in (9, 10)}
    new_code = np.where(
        version == 9,
        codes[9][rng.integers(0, len(codes[9]), extra)],
        codes[10][rng.integers(0, len(codes[10]), extra)],
    )
    copies = copies.with_columns(icd_code=pl.Series(new_code, dtype=pl.String))
    # The extra codes follow the admission's own, numbered on from its last seq_num.
    both = pl.concat([diagnoses.with_columns(_extra=pl.lit(0)), copies.with_columns(_extra=pl.lit(1))])
    both = both.with_row_index("_pos").sort(["_extra", "_pos"])
    last = diagnoses.group_by("hadm_id").agg(pl.col("seq_num").max().alias("_last"))
    both = both.join(last, on="hadm_id", how="left").with_columns(
        seq_num=pl.when(pl.col("_extra") == 1)
        .then(pl.col("_last") + pl.int_range(1, pl.len() + 1).over("hadm_id", "_extra"))
        .otherwise(pl.col("seq_num"))
    )
    return both.sort(["subject_id", "hadm_id", "seq_num"]).select(diagnoses.columns)


def _more_outpatient_labs(rng: np.random.Generator, labevents: pl.DataFrame, target: int) -> pl.DataFrame:
    extra = target - labevents.height
    if extra <= 0 or labevents.is_empty():
        return labevents
    copies = _sample_rows(rng, labevents, extra)
    earlier = pl.Series(rng.integers(30, 4 * 365, extra) * 86_400_000, dtype=pl.Int64).cast(pl.Duration("ms"))
    specimen = labevents["specimen_id"].max() + 1 + rng.permutation(extra)
    copies = copies.with_columns(
        hadm_id=pl.lit(None, dtype=labevents.schema["hadm_id"]),
        charttime=pl.col("charttime") - earlier,
        storetime=pl.col("storetime") - earlier,
        specimen_id=pl.Series(specimen, dtype=labevents.schema["specimen_id"]),
    )
    return numbered_in_file_order(pl.concat([labevents, copies]), labevents["labevent_id"].min())


def _more_omr(rng: np.random.Generator, omr: pl.DataFrame, target: int) -> pl.DataFrame:
    extra = target - omr.height
    if extra <= 0 or omr.is_empty():
        return omr
    copies = _sample_rows(rng, omr, extra)
    days = pl.Series(rng.integers(1, 4 * 365, extra) * np.where(rng.random(extra) < 0.5, -1, 1)).cast(pl.Int64)
    copies = copies.with_columns(chartdate=pl.col("chartdate") + pl.duration(days=days), seq_num=pl.lit(1))
    return pl.concat([omr, copies.cast(omr.schema)]).sort(["subject_id", "chartdate", "result_name"])


def _more_prescriptions(rng: np.random.Generator, prescriptions: pl.DataFrame, target: int) -> pl.DataFrame:
    extra = target - prescriptions.height
    if extra <= 0 or prescriptions.is_empty():
        return prescriptions
    copies = _sample_rows(rng, prescriptions, extra)
    later = pl.Series(rng.integers(1, 72, extra) * 3_600_000, dtype=pl.Int64).cast(pl.Duration("ms"))
    copies = copies.with_columns(
        starttime=pl.col("starttime") + later,
        stoptime=pl.col("stoptime") + later,
        poe_id=pl.lit(None, dtype=pl.String),
        poe_seq=pl.lit(None, dtype=prescriptions.schema["poe_seq"]),
    )
    # The generator numbers pharmacy_id as 3k + 1 in starttime order; so do the copies, after the chunk's own.
    first = prescriptions["pharmacy_id"].min()
    both = pl.concat([prescriptions, copies.cast(prescriptions.schema)]).sort(["subject_id", "starttime"])
    return both.with_columns(
        pharmacy_id=(pl.int_range(0, pl.len(), dtype=pl.Int64) * 3 + first).cast(prescriptions.schema["pharmacy_id"])
    )


def keep_records(rng: np.random.Generator, records: pl.DataFrame, target: int) -> pl.DataFrame:
    """A random ``target`` rows of an ECG or echo-study list (all when it has fewer), in the list's order."""
    if records.height <= target:
        return records
    keep = np.zeros(records.height, dtype=bool)
    keep[rng.choice(records.height, size=target, replace=False)] = True
    return records.filter(pl.Series(keep))


def more_dicoms(rng: np.random.Generator, dicoms: pl.DataFrame, target: int) -> pl.DataFrame:
    """The echo DICOM rows (``records.echo_dicoms``) with repeated views added until there are ``target``: copies
    of a study's own DICOMs, acquired after its last one and numbered on from its last instance."""
    extra = target - dicoms.height
    if extra <= 0 or dicoms.is_empty():
        return dicoms
    copies = _sample_rows(rng, dicoms, extra).with_columns(_copy=pl.lit(True))
    last = dicoms.group_by("study_id").agg(
        pl.col("_instance").max().alias("_last"), pl.col("acquisition_datetime").max().alias("_last_time")
    )
    copies = copies.join(last, on="study_id", how="left").with_columns(
        _instance=pl.col("_last") + pl.int_range(1, pl.len() + 1).over("study_id")
    )
    copies = copies.with_columns(
        acquisition_datetime=pl.col("_last_time") + pl.duration(seconds=30 * (pl.col("_instance") - pl.col("_last")))
    )
    copies = copies.with_columns(dicom_filepath=dicom_filepath()).select(dicoms.columns)
    return pl.concat([dicoms, copies.cast(dicoms.schema)]).sort(["subject_id", "study_id", "_instance"])
