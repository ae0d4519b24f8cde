"""Cohort and label SQL concepts (docs/CURATION.md, Cohort and Labels) on small hand-built MIMIC-IV-shaped
Parquet tables.

Each test writes real Parquet files with the real tables' column types, calls the library function of a
workflow rule with the arguments its script passes, and reads back the Parquet the rule writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import polars as pl
import pytest
import yaml

from hftri_mimic.cohort.concepts import (
    COHORT_COLUMNS,
    MODALITIES,
    assemble_cohort,
    check_attrition,
    ecg_admissions,
    echo_admissions,
    followup,
    hf_admissions,
    index_admissions,
    lab_admissions,
    prevalent_hf,
)

CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
HF_CODE_LISTS = CONFIG["labels"]["hf_code_lists"]
LAB_ITEMIDS = CONFIG["cohort"]["lab_itemids"]
LAB_ITEM = LAB_ITEMIDS[0]
LACTATE = 50813  # a real lab item that is not in the configured list
ZERO_WINDOW = {"start_offset_hours": 0, "end_offset_hours": 0}

H = timedelta(hours=1)
D = timedelta(days=1)
T0 = datetime(2150, 3, 1, 10, 0, 0)  # an admittime; MIMIC-IV dates are shifted into 2100-2200

DT = pl.Datetime("us")
SCHEMAS = {
    "patients": {
        "subject_id": pl.Int64,
        "gender": pl.String,
        "anchor_age": pl.Int64,
        "anchor_year": pl.Int64,
        "anchor_year_group": pl.String,
        "dod": pl.Date,
    },
    "admissions": {
        "subject_id": pl.Int64,
        "hadm_id": pl.Int64,
        "admittime": DT,
        "dischtime": DT,
        "admission_type": pl.String,
        "race": pl.String,
        "edregtime": DT,
    },
    "diagnoses_icd": {
        "subject_id": pl.Int64,
        "hadm_id": pl.Int64,
        "seq_num": pl.Int64,
        "icd_code": pl.String,
        "icd_version": pl.Int64,
    },
    "labevents": {
        "labevent_id": pl.Int64,
        "subject_id": pl.Int64,
        "hadm_id": pl.Int64,
        "itemid": pl.Int64,
        "charttime": DT,
        "storetime": DT,
        "valuenum": pl.Float64,
    },
    "ecg_record_list": {
        "subject_id": pl.Int64,
        "study_id": pl.Int64,
        "file_name": pl.String,
        "ecg_time": DT,
        "path": pl.String,
    },
    "echo_study_list": {
        "subject_id": pl.Int64,
        "study_id": pl.Int64,
        "study_datetime": DT,
        "note_id": pl.String,
        "note_seq": pl.Int64,
        "note_charttime": DT,
    },
    # What the index_admissions rule writes (input of prevalent_hf and followup).
    "index_admissions": {
        "subject_id": pl.Int64,
        "hadm_id": pl.Int64,
        "admittime": DT,
        "dischtime": DT,
        "age": pl.Int64,
        "gender": pl.String,
        "race": pl.String,
        "ecg_study_id": pl.Int64,
        "ecg_time": DT,
        "ecg_path": pl.String,
        "echo_study_id": pl.Int64,
        "echo_time": DT,
    },
}


def write_table(path: Path, name: str, rows: list[dict]) -> Path:
    pl.DataFrame(rows, schema=SCHEMAS[name]).write_parquet(path)
    return path


@dataclass
class Source:
    """A tiny MIMIC-IV hosp + ECG + ECHO source, built row by row."""

    patients: list[dict] = field(default_factory=list)
    admissions: list[dict] = field(default_factory=list)
    diagnoses: list[dict] = field(default_factory=list)
    labevents: list[dict] = field(default_factory=list)
    ecgs: list[dict] = field(default_factory=list)
    echoes: list[dict] = field(default_factory=list)

    def patient(self, subject_id: int, anchor_age: int = 60, anchor_year: int = 2150, dod: date | None = None):
        self.patients.append(
            {
                "subject_id": subject_id,
                "gender": "F",
                "anchor_age": anchor_age,
                "anchor_year": anchor_year,
                "anchor_year_group": "2017 - 2019",
                "dod": dod,
            }
        )

    def admission(
        self,
        subject_id: int,
        hadm_id: int,
        admittime: datetime,
        dischtime: datetime,
        labs: bool = True,
        edregtime: datetime | None = None,
    ):
        """An admission (through the emergency department when ``edregtime``); with ``labs`` one configured lab item
        is drawn during it."""
        self.admissions.append(
            {
                "subject_id": subject_id,
                "hadm_id": hadm_id,
                "admittime": admittime,
                "dischtime": dischtime,
                "admission_type": "EW EMER.",
                "race": "WHITE",
                "edregtime": edregtime,
            }
        )
        if labs:
            self.lab(subject_id, hadm_id, LAB_ITEM, admittime + H)

    def lab(self, subject_id: int, hadm_id: int | None, itemid: int, charttime: datetime):
        self.labevents.append(
            {
                "labevent_id": len(self.labevents) + 1,
                "subject_id": subject_id,
                "hadm_id": hadm_id,
                "itemid": itemid,
                "charttime": charttime,
                "storetime": charttime + H,
                "valuenum": 1.0,
            }
        )

    def diagnosis(self, subject_id: int, hadm_id: int, icd_code: str, icd_version: int):
        self.diagnoses.append(
            {
                "subject_id": subject_id,
                "hadm_id": hadm_id,
                "seq_num": len(self.diagnoses) + 1,
                "icd_code": icd_code,
                "icd_version": icd_version,
            }
        )

    def ecg(self, subject_id: int, study_id: int, ecg_time: datetime):
        path = f"files/p{str(subject_id)[:4]}/p{subject_id}/s{study_id}/{study_id}"
        self.ecgs.append(
            {
                "subject_id": subject_id,
                "study_id": study_id,
                "file_name": str(study_id),
                "ecg_time": ecg_time,
                "path": path,
            }
        )

    def echo(self, subject_id: int, study_id: int, study_datetime: datetime):
        self.echoes.append(
            {
                "subject_id": subject_id,
                "study_id": study_id,
                "study_datetime": study_datetime,
                "note_id": None,
                "note_seq": None,
                "note_charttime": None,
            }
        )

    def write(self, root: Path) -> dict[str, Path]:
        root.mkdir(parents=True, exist_ok=True)
        tables = {
            "patients": self.patients,
            "admissions": self.admissions,
            "diagnoses_icd": self.diagnoses,
            "labevents": self.labevents,
            "ecg_record_list": self.ecgs,
            "echo_study_list": self.echoes,
        }
        return {name: write_table(root / f"{name}.parquet", name, rows) for name, rows in tables.items()}


def run_index(
    tmp_path: Path,
    source: Source,
    require: tuple[str, ...] | list[str] = MODALITIES,
    order: str = "first",
    min_age: int = 18,
    with_echo: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The workflow from source tables to index admissions: availability rules, then index_admissions."""
    raw = source.write(tmp_path / "parquet")
    out = tmp_path / "cohort"
    out.mkdir(exist_ok=True)
    lab_admissions(raw["labevents"], out / "lab_admissions.parquet", LAB_ITEMIDS)
    ecg_admissions(
        raw["admissions"], raw["ecg_record_list"], out / "ecg_admissions.parquet", CONFIG["cohort"]["ecg_window"]
    )
    if with_echo:
        echo_admissions(
            raw["admissions"], raw["echo_study_list"], out / "echo_admissions.parquet", CONFIG["cohort"]["echo_window"]
        )
    index_admissions(
        admissions=raw["admissions"],
        patients=raw["patients"],
        out=out / "index_admissions.parquet",
        attrition_out=out / "attrition_eligibility.parquet",
        eligibility_out=out / "eligibility.parquet",
        min_age=min_age,
        require_modalities=list(require),
        order=order,
        lab_admissions=out / "lab_admissions.parquet",
        ecg_admissions=out / "ecg_admissions.parquet",
        echo_admissions=out / "echo_admissions.parquet" if with_echo else None,
        allow_empty=True,  # single criteria on one-patient sources; the empty-cohort error has its own test
    )
    return (
        pl.read_parquet(out / "index_admissions.parquet"),
        pl.read_parquet(out / "attrition_eligibility.parquet"),
    )


def full_admission(source: Source, subject_id: int, hadm_id: int, admittime: datetime, study_id: int):
    """A 4-day admission with labs, one ECG and one echo study inside it."""
    source.admission(subject_id, hadm_id, admittime, admittime + 4 * D)
    source.ecg(subject_id, study_id, admittime + D)
    source.echo(subject_id, study_id, admittime + D + 2 * H)


def index_row(frame: pl.DataFrame, subject_id: int) -> dict:
    rows = frame.filter(pl.col("subject_id") == subject_id).rows(named=True)
    assert len(rows) == 1, f"subject {subject_id}: expected one index admission, got {len(rows)}"
    return rows[0]


# ---------------------------------------------------------------------------------------------------
# hf_admissions (docs/CURATION.md, Labels: heart-failure codes per ICD version, compared without dots, upper case)
# ---------------------------------------------------------------------------------------------------


def hf_match(tmp_path: Path, icd_code: str, icd_version: int, code_list: str) -> bool:
    source = Source()
    source.diagnosis(1, 10, icd_code, icd_version)
    source.diagnosis(1, 10, "4019", 9)  # hypertension: never HF, keeps the admission's other codes realistic
    raw = source.write(tmp_path / code_list)
    out = tmp_path / code_list / "hf_admissions.parquet"
    codes = HF_CODE_LISTS[code_list]
    hf_admissions(raw["diagnoses_icd"], out, icd9=codes["icd9"], icd10=codes["icd10"])
    found = pl.read_parquet(out)
    assert found.height <= 1, f"one admission should appear at most once, got {found.height} rows"
    return found.height == 1


@pytest.mark.parametrize(
    ("icd_code", "icd_version", "strict", "charlson", "why"),
    [
        ("428.0", 9, True, True, "ICD-9 428* written with a dot"),
        ("i50.22", 10, True, True, "ICD-10 I50* written with a dot in lower case"),
        ("40201", 9, True, True, "ICD-9 hypertensive heart disease with HF, exact code"),
        ("4254", 9, False, True, "ICD-9 4254 (cardiomyopathy) is Charlson-only"),
        ("I255", 10, False, True, "ICD-10 I255 (ischaemic cardiomyopathy) is Charlson-only"),
        ("I420", 10, False, True, "ICD-10 I420 (dilated cardiomyopathy) is Charlson-only"),
        ("4280", 10, False, False, "ICD-9 text 4280 filed as ICD-10 must not match the ICD-9 list"),
        ("I5022", 9, False, False, "ICD-10 text I5022 filed as ICD-9 must not match the ICD-10 list"),
        ("I5A", 10, False, False, "I5A (non-ischaemic myocardial injury) is not heart failure"),
        ("42731", 9, False, False, "ICD-9 atrial fibrillation is not heart failure"),
    ],
)
def test_hf_code_matching_per_list(tmp_path, icd_code, icd_version, strict, charlson, why):
    assert hf_match(tmp_path, icd_code, icd_version, "strict") is strict, f"strict list: {why}"
    assert hf_match(tmp_path, icd_code, icd_version, "charlson") is charlson, f"charlson list: {why}"


def test_hf_admissions_lists_each_admission_once_with_its_subject(tmp_path):
    # Rule: the output is the set of (subject_id, hadm_id) with any HF code, however many HF codes it has.
    source = Source()
    source.diagnosis(7, 70, "4280", 9)
    source.diagnosis(7, 70, "42821", 9)
    source.diagnosis(7, 71, "I5023", 10)
    source.diagnosis(8, 80, "I10", 10)
    raw = source.write(tmp_path)
    codes = HF_CODE_LISTS["strict"]
    hf_admissions(raw["diagnoses_icd"], tmp_path / "hf.parquet", icd9=codes["icd9"], icd10=codes["icd10"])
    found = sorted(pl.read_parquet(tmp_path / "hf.parquet").select("subject_id", "hadm_id").rows())
    assert found == [(7, 70), (7, 71)], "admission 70 has two HF codes but must be listed once; 80 has none"


# ---------------------------------------------------------------------------------------------------
# lab_admissions (criterion 2: >= 1 labevents row of a configured item with this hadm_id)
# ---------------------------------------------------------------------------------------------------


def test_only_configured_lab_items_make_an_admission_with_labs(tmp_path):
    assert LACTATE not in LAB_ITEMIDS, "test premise: lactate is not a configured lab item"
    source = Source()
    source.lab(1, 10, LAB_ITEM, T0)
    source.lab(1, 10, LACTATE, T0)
    source.lab(2, 20, LACTATE, T0)  # only an unconfigured item
    raw = source.write(tmp_path)
    lab_admissions(raw["labevents"], tmp_path / "labs.parquet", LAB_ITEMIDS)
    found = pl.read_parquet(tmp_path / "labs.parquet")
    assert found["hadm_id"].to_list() == [10], "admission 20 has only an unconfigured item and must not count"
    assert found["n_lab_rows"].to_list() == [1], "the unconfigured lactate row of admission 10 was counted"


def test_outpatient_lab_rows_never_count(tmp_path):
    # Rule: outpatient draws (hadm_id NULL) belong to no admission.
    source = Source()
    source.lab(1, None, LAB_ITEM, T0)
    source.lab(1, None, LAB_ITEMIDS[1], T0)
    source.lab(2, 20, LAB_ITEM, T0)
    raw = source.write(tmp_path)
    lab_admissions(raw["labevents"], tmp_path / "labs.parquet", LAB_ITEMIDS)
    found = pl.read_parquet(tmp_path / "labs.parquet")
    assert found["hadm_id"].null_count() == 0, "outpatient lab rows (hadm_id NULL) became an 'admission'"
    assert found["hadm_id"].to_list() == [20]


# ---------------------------------------------------------------------------------------------------
# ecg_admissions / echo_admissions (criteria 3-4: record time in [admittime + start, dischtime + end])
# ---------------------------------------------------------------------------------------------------


def window_pairs(tmp_path: Path, modality: str, record_times: dict[int, tuple[int, datetime]], window: dict) -> set:
    """(hadm_id, study_id) pairs for admission 100 of subject 1, [T0, T0 + 4 days]; records by study_id."""
    source = Source()
    source.admission(1, 100, T0, T0 + 4 * D)
    source.admission(2, 200, T0 + 30 * D, T0 + 32 * D)
    for study_id, (subject_id, when) in record_times.items():
        (source.ecg if modality == "ecg" else source.echo)(subject_id, study_id, when)
    raw = source.write(tmp_path)
    out = tmp_path / f"{modality}_admissions.parquet"
    if modality == "ecg":
        ecg_admissions(raw["admissions"], raw["ecg_record_list"], out=out, window=window)
    else:
        echo_admissions(raw["admissions"], raw["echo_study_list"], out=out, window=window)
    return set(pl.read_parquet(out).select("hadm_id", f"{modality}_study_id").rows())


@pytest.mark.parametrize("modality", ["ecg", "echo"])
def test_record_before_admittime_needs_a_negative_start_offset(tmp_path, modality):
    records = {1: (1, T0 - 2 * H)}
    assert window_pairs(tmp_path / "zero", modality, records, ZERO_WINDOW) == set(), (
        f"an {modality} 2 h before admittime is outside [admittime, dischtime]"
    )
    widened = {"start_offset_hours": -6, "end_offset_hours": 0}
    assert window_pairs(tmp_path / "wide", modality, records, widened) == {(100, 1)}, (
        f"an {modality} 2 h before admittime is inside [admittime - 6 h, dischtime]"
    )


@pytest.mark.parametrize("modality", ["ecg", "echo"])
def test_record_at_exactly_dischtime_is_inside(tmp_path, modality):
    records = {1: (1, T0 + 4 * D), 2: (1, T0 + 4 * D + timedelta(seconds=1))}
    assert window_pairs(tmp_path, modality, records, ZERO_WINDOW) == {(100, 1)}, (
        f"the window is closed: an {modality} at dischtime is in, one second later is out"
    )


@pytest.mark.parametrize("modality", ["ecg", "echo"])
def test_a_window_from_edregtime_takes_in_the_emergency_department_records(tmp_path, modality):
    """Admission 100 came through the ED (registered 5 h before admittime), admission 300 did not: a record 2 h before
    admittime is in the window from edregtime for 100 only; one 6 h before is before the ED registration."""
    source = Source()
    source.admission(1, 100, T0, T0 + 4 * D, edregtime=T0 - 5 * H)
    source.admission(1, 300, T0 + 30 * D, T0 + 32 * D)  # direct admission: no edregtime
    add = source.ecg if modality == "ecg" else source.echo
    add(1, 1, T0 - 2 * H)
    add(1, 2, T0 - 6 * H)
    add(1, 3, T0 + 30 * D - 2 * H)
    raw = source.write(tmp_path)
    concept, records = (
        (ecg_admissions, "ecg_record_list") if modality == "ecg" else (echo_admissions, "echo_study_list")
    )
    pairs = {}
    for start_from in ("admittime", "edregtime"):
        out = tmp_path / f"{start_from}.parquet"
        window = {**ZERO_WINDOW, "start_from": start_from}
        concept(
            raw["admissions"],
            raw[records],
            out=out,
            window=window,
            places_out=tmp_path / f"{start_from}.places.parquet",
        )
        pairs[start_from] = set(pl.read_parquet(out).select("hadm_id", f"{modality}_study_id").rows())
    assert pairs == {"admittime": set(), "edregtime": {(100, 1)}}
    places = {
        start_from: dict(pl.read_parquet(tmp_path / f"{start_from}.places.parquet").select("place", "n_records").rows())
        for start_from in pairs
    }
    assert places == {"admittime": {"before_window": 3}, "edregtime": {"in_window": 1, "before_window": 2}}


@pytest.mark.parametrize("modality", ["ecg", "echo"])
def test_window_places_count_every_record_once(tmp_path, modality):
    """Each record of the list is counted in exactly one place: in a window, near one (before or after), away from
    every admission, or of a patient without admissions."""
    source = Source()
    source.admission(1, 100, T0, T0 + 4 * D)
    source.admission(1, 200, T0 + 10 * D, T0 + 12 * D)
    add = source.ecg if modality == "ecg" else source.echo
    times = {1: T0 + D, 2: T0 + 11 * D, 3: T0 - 3 * H, 4: T0 + 4 * D + 5 * H, 5: T0 + 60 * D, 6: T0 + 10 * D - H}
    for study_id, when in times.items():
        add(1, study_id, when)
    add(9, 7, T0)  # subject 9 has no admission
    raw = source.write(tmp_path)
    concept, records = (
        (ecg_admissions, "ecg_record_list") if modality == "ecg" else (echo_admissions, "echo_study_list")
    )
    concept(raw["admissions"], raw[records], out=tmp_path / "pairs.parquet", window=ZERO_WINDOW,
            places_out=tmp_path / "places.parquet")  # fmt: skip
    places = pl.read_parquet(tmp_path / "places.parquet")
    assert places.select("place", "n_records", "n_subjects").rows() == [
        ("in_window", 2, 1),
        ("before_window", 2, 1),  # 3 h before admission 100, 1 h before admission 200
        ("after_window", 1, 1),
        ("away_from_admissions", 1, 1),
        ("no_admission", 1, 1),
    ]
    assert places["description"].null_count() == 0


@pytest.mark.parametrize("modality", ["ecg", "echo"])
def test_another_patients_record_never_matches(tmp_path, modality):
    # Subject 2's record lies inside subject 1's admission window (and outside subject 2's own admission).
    records = {1: (2, T0 + D), 2: (1, T0 + D)}
    assert window_pairs(tmp_path, modality, records, ZERO_WINDOW) == {(100, 2)}, (
        f"an {modality} of subject 2 was attached to subject 1's admission"
    )


# ---------------------------------------------------------------------------------------------------
# index_admissions (criteria 1, 5, 6 and the attrition table)
# ---------------------------------------------------------------------------------------------------


def test_age_is_anchor_age_plus_years_since_anchor_year_and_minors_are_excluded(tmp_path):
    source = Source()
    source.patient(1, anchor_age=17, anchor_year=2150)
    full_admission(source, 1, 101, datetime(2150, 3, 1, 10), 1)  # age 17
    full_admission(source, 1, 102, datetime(2151, 3, 1, 10), 2)  # age 18
    source.patient(2, anchor_age=40, anchor_year=2150)
    full_admission(source, 2, 201, datetime(2155, 12, 31, 23), 3)  # age 45
    index, _ = run_index(tmp_path, source)
    first = index_row(index, 1)
    assert first["hadm_id"] == 102, "the admission at age 17 is not adult; the first adult admission is 102"
    assert first["age"] == 18, "age = anchor_age 17 + year 2151 - anchor_year 2150"
    assert index_row(index, 2)["age"] == 45, "age = anchor_age 40 + year 2155 - anchor_year 2150"


def test_minor_with_only_underage_admissions_has_no_index(tmp_path):
    source = Source()
    source.patient(1, anchor_age=17, anchor_year=2150)
    full_admission(source, 1, 101, datetime(2150, 3, 1, 10), 1)
    index, _ = run_index(tmp_path, source)
    assert index.height == 0, "a 17-year-old's admission passed the min_age 18 criterion"


def test_required_modality_excludes_admissions_without_it(tmp_path):
    source = Source()
    source.patient(1)
    source.admission(1, 101, T0, T0 + 4 * D)  # labs and ECG, no echo
    source.ecg(1, 1, T0 + D)
    full_admission(source, 1, 102, T0 + 60 * D, 2)
    index_all, _ = run_index(tmp_path / "all", source, require=["lab", "ecg", "echo"])
    assert index_row(index_all, 1)["hadm_id"] == 102, "admission 101 has no echo study and echo is required"
    index_no_echo, _ = run_index(tmp_path / "no_echo", source, require=["lab", "ecg"])
    assert index_row(index_no_echo, 1)["hadm_id"] == 101, "echo not required: the first admission is eligible"


def test_lab_requirement_excludes_admission_without_labs(tmp_path):
    source = Source()
    source.patient(1)
    source.admission(1, 101, T0, T0 + 4 * D, labs=False)
    source.ecg(1, 1, T0 + D)
    source.echo(1, 1, T0 + D)
    full_admission(source, 1, 102, T0 + 60 * D, 2)
    index, _ = run_index(tmp_path, source)
    assert index_row(index, 1)["hadm_id"] == 102, "admission 101 has no configured lab item"


@pytest.mark.parametrize(("order", "expected"), [("first", 101), ("last", 103)])
def test_index_admission_order(tmp_path, order, expected):
    source = Source()
    source.patient(1)
    full_admission(source, 1, 102, T0 + 40 * D, 2)  # rows deliberately not in time order
    full_admission(source, 1, 103, T0 + 80 * D, 3)
    full_admission(source, 1, 101, T0, 1)
    index, _ = run_index(tmp_path, source, order=order)
    assert index_row(index, 1)["hadm_id"] == expected, f"order {order!r} picks the {order} eligible admission"


def test_echo_kept_is_the_first_study_in_the_window(tmp_path):
    source = Source()
    source.patient(1)
    source.admission(1, 101, T0, T0 + 4 * D)
    source.ecg(1, 1, T0 + D)
    source.echo(1, 900, T0 - D)  # before the admission: outside the window
    source.echo(1, 800, T0 + 2 * D)  # smaller study_id but later
    source.echo(1, 850, T0 + D + 5 * H)  # first in the window
    index, _ = run_index(tmp_path, source)
    row = index_row(index, 1)
    assert row["echo_study_id"] == 850, "the first echo study within [admittime, dischtime] is kept"
    assert row["echo_time"] == T0 + D + 5 * H


def test_ecg_kept_is_the_one_closest_to_the_echo_even_before_it(tmp_path):
    echo_time = T0 + 2 * D + 12 * H
    source = Source()
    source.patient(1)
    source.admission(1, 101, T0, T0 + 4 * D)
    source.echo(1, 500, echo_time)
    source.ecg(1, 1, T0 + D)  # first in the window, far from the echo
    source.ecg(1, 2, echo_time + 3 * H)  # after the echo, 3 h away
    source.ecg(1, 3, echo_time - 2 * H)  # before the echo, 2 h away: the closest
    index, _ = run_index(tmp_path, source)
    row = index_row(index, 1)
    assert row["ecg_study_id"] == 3, (
        f"the ECG 2 h before the echo is closer than the one 3 h after; got study {row['ecg_study_id']}"
    )
    assert row["ecg_time"] == echo_time - 2 * H


def test_without_echo_table_the_first_ecg_in_the_window_is_kept(tmp_path):
    source = Source()
    source.patient(1)
    source.admission(1, 101, T0, T0 + 4 * D)
    source.ecg(1, 1, T0 + 2 * D)
    source.ecg(1, 2, T0 + 3 * H)  # earliest inside the window
    source.ecg(1, 3, T0 - 3 * H)  # before admittime: outside the window
    index, _ = run_index(tmp_path, source, require=["lab", "ecg"], with_echo=False)
    row = index_row(index, 1)
    assert row["ecg_study_id"] == 2, "without echo the first ECG within the admission window is kept"
    assert row["echo_study_id"] is None, "no echo table: the echo study is null"


def attrition_world() -> Source:
    """8 admissions of 4 patients, each excluded by a known step (see the expected table below)."""
    source = Source()
    source.patient(1, anchor_age=17, anchor_year=2150)
    full_admission(source, 1, 101, datetime(2150, 3, 1, 10), 1)  # age 17
    full_admission(source, 1, 102, datetime(2151, 3, 1, 10), 2)  # index
    source.patient(2)
    source.admission(2, 201, T0, T0 + 3 * D)  # labs only: no ECG
    source.admission(2, 202, T0 + 50 * D, T0 + 53 * D)  # labs + ECG: no echo
    source.ecg(2, 3, T0 + 51 * D)
    source.patient(3, anchor_age=70)
    source.admission(3, 301, T0, T0 + 3 * D, labs=False)  # ECG + echo: no labs
    source.ecg(3, 4, T0 + D)
    source.echo(3, 4, T0 + D)
    full_admission(source, 3, 302, T0 + 20 * D, 5)  # index
    full_admission(source, 3, 303, T0 + 90 * D, 6)  # eligible, but not the first
    source.patient(4, anchor_age=16, anchor_year=2150)
    full_admission(source, 4, 401, T0, 7)  # age 16
    return source


def test_attrition_counts_every_step(tmp_path):
    index, attrition = run_index(tmp_path, attrition_world())
    counts = attrition.sort("reason_id").select(
        "reason_id", "n_records", "n_subjects", "excluded_records", "excluded_subjects"
    )
    expected = [
        (0, 8, 4, 0, 0),  # source
        (1, 6, 3, 2, 1),  # age < 18: admissions 101, 401; subject 4
        (2, 5, 3, 1, 0),  # no labs: 301
        (3, 4, 3, 1, 0),  # no ECG: 201
        (4, 3, 2, 1, 1),  # no echo: 202; subject 2
        (5, 2, 2, 1, 0),  # not the index admission: 303
    ]
    assert counts.rows() == expected, f"attrition rows:\n{attrition}"
    assert sorted(index["hadm_id"].to_list()) == [102, 302]


def test_attrition_reconciles_and_ends_at_the_index_admissions(tmp_path):
    index, attrition = run_index(tmp_path, attrition_world())
    check_attrition(attrition)  # raises when a step does not reconcile
    rows = attrition.sort("reason_id").rows(named=True)
    assert [r["reason_id"] for r in rows] == list(range(len(rows))), "reason_id must number the steps 0..n-1"
    for prev, row in pairwise(rows):
        for unit in ("records", "subjects"):
            assert row[f"n_{unit}"] == prev[f"n_{unit}"] - row[f"excluded_{unit}"], (
                f"step {row['reason_id']} ({row['reason']}): {unit} {prev[f'n_{unit}']} - "
                f"{row[f'excluded_{unit}']} != {row[f'n_{unit}']}"
            )
    last = rows[-1]
    assert last["n_records"] == last["n_subjects"] == index.height, (
        f"final step must count one record per subject, as many as index rows ({index.height}): {last}"
    )


def test_attrition_lists_only_required_modalities(tmp_path):
    _, attrition = run_index(tmp_path, attrition_world(), require=["lab", "ecg"], with_echo=False)
    reasons = " | ".join(attrition.sort("reason_id")["reason"].to_list())
    assert "echo" not in reasons, f"echo is not required but has an attrition step: {reasons}"
    assert attrition.height == 5, f"source, age, labs, ECG, index: {reasons}"
    check_attrition(attrition)


def test_requiring_a_modality_without_its_table_names_it(tmp_path):
    raw = attrition_world().write(tmp_path)
    with pytest.raises(ValueError, match="echo"):
        index_admissions(
            admissions=raw["admissions"],
            patients=raw["patients"],
            out=tmp_path / "index.parquet",
            attrition_out=tmp_path / "attrition.parquet",
            eligibility_out=tmp_path / "eligibility.parquet",
            min_age=18,
            require_modalities=["lab", "ecg", "echo"],
            order="first",
            lab_admissions=tmp_path / "unused_labs.parquet",
            ecg_admissions=tmp_path / "unused_ecg.parquet",
            echo_admissions=None,
        )


# ---------------------------------------------------------------------------------------------------
# prevalent_hf and followup (docs/CURATION.md, Labels)
# ---------------------------------------------------------------------------------------------------


def write_index(path: Path, source: Source, hadm_ids: list[int]) -> Path:
    """An index_admissions file as the rule writes it, for the given admissions of ``source``."""
    rows = [
        {
            "subject_id": a["subject_id"],
            "hadm_id": a["hadm_id"],
            "admittime": a["admittime"],
            "dischtime": a["dischtime"],
            "age": 60,
            "gender": "F",
            "race": a["race"],
            "ecg_study_id": None,
            "ecg_time": None,
            "ecg_path": None,
            "echo_study_id": None,
            "echo_time": None,
        }
        for a in source.admissions
        if a["hadm_id"] in hadm_ids
    ]
    return write_table(path, "index_admissions", rows)


def run_labels(
    tmp_path: Path,
    source: Source,
    index_hadm_ids: list[int],
    lookback_days: int | None = None,
    min_days: int = 30,
    censor_at_death: bool = False,
) -> dict[str, Path]:
    """The label rules in workflow order: hf_admissions, prevalent_hf, followup."""
    raw = source.write(tmp_path / "parquet")
    out = tmp_path / "cohort"
    out.mkdir(exist_ok=True)
    paths = {
        "index": write_index(out / "index_admissions.parquet", source, index_hadm_ids),
        "hf": out / "hf_admissions.parquet",
        "prevalent": out / "prevalent_hf.parquet",
        "followup": out / "followup.parquet",
    }
    codes = HF_CODE_LISTS[CONFIG["labels"]["hf_codes"]]
    hf_admissions(raw["diagnoses_icd"], paths["hf"], icd9=codes["icd9"], icd10=codes["icd10"])
    prevalent_hf(paths["index"], raw["admissions"], paths["hf"], paths["prevalent"], lookback_days=lookback_days)
    followup(
        paths["index"],
        paths["prevalent"],
        raw["admissions"],
        raw["patients"],
        paths["hf"],
        paths["followup"],
        min_days=min_days,
        censor_at_death=censor_at_death,
    )
    return paths


EARLIER_GAP_DAYS = 151  # admission 10 starts 151 days before the index admission 11


def prevalent_for(tmp_path: Path, hf_hadm_id: int, lookback_days: int | None) -> bool:
    """Subject 1 with admissions 10 (earlier), 11 (index), 12 (later); an HF code on ``hf_hadm_id``."""
    source = Source()
    source.patient(1)
    source.admission(1, 10, T0 - EARLIER_GAP_DAYS * D, T0 - EARLIER_GAP_DAYS * D + 5 * D)
    source.admission(1, 11, T0, T0 + 4 * D)
    source.admission(1, 12, T0 + 200 * D, T0 + 203 * D)
    source.diagnosis(1, hf_hadm_id, "4280", 9)
    paths = run_labels(tmp_path, source, [11], lookback_days=lookback_days)
    rows = pl.read_parquet(paths["prevalent"]).rows(named=True)
    assert len(rows) == 1, f"one prevalence row per index admission, got {rows}"
    return rows[0]["prevalent_hf"]


def test_hf_on_the_index_admission_is_prevalent(tmp_path):
    assert prevalent_for(tmp_path, 11, None) is True


def test_hf_on_an_earlier_admission_is_prevalent_without_lookback(tmp_path):
    assert prevalent_for(tmp_path, 10, None) is True, "lookback None: any earlier admission counts"


def test_hf_on_an_earlier_admission_outside_the_lookback_is_not_prevalent(tmp_path):
    assert prevalent_for(tmp_path, 10, EARLIER_GAP_DAYS - 51) is False, (
        "the HF admission started 151 days before the index, outside a 100-day lookback"
    )


def test_hf_on_an_earlier_admission_inside_the_lookback_is_prevalent(tmp_path):
    assert prevalent_for(tmp_path, 10, EARLIER_GAP_DAYS + 49) is True, (
        "the HF admission started 151 days before the index, inside a 200-day lookback"
    )


def test_hf_only_on_a_later_admission_is_not_prevalent(tmp_path):
    assert prevalent_for(tmp_path, 12, None) is False, "a later HF code is incident, not prevalent"


# Subject 1 (non-prevalent): index admission, a readmission 10 days after discharge with an HF code,
# and an admission 100 days after discharge without one.
INDEX_ADMIT = T0
INDEX_DISCH = T0 + 5 * D + 4 * H
READMIT = INDEX_DISCH + 10 * D
READMIT_DISCH = READMIT + 4 * D + 30 * timedelta(minutes=1)
LATE_ADMIT = INDEX_DISCH + 100 * D
LATE_DISCH = LATE_ADMIT + 5 * D + 17 * timedelta(minutes=1) + 11 * timedelta(seconds=1)


def days(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 86400.0


def followup_world(dod: date | None = None) -> Source:
    source = Source()
    source.patient(1, dod=dod)
    source.admission(1, 11, INDEX_ADMIT, INDEX_DISCH)
    source.admission(1, 12, READMIT, READMIT_DISCH)
    source.diagnosis(1, 12, "I50.9", 10)
    source.admission(1, 13, LATE_ADMIT, LATE_DISCH)
    source.diagnosis(1, 13, "I10", 10)
    # Subject 2 (non-prevalent): no admission after the index.
    source.patient(2)
    source.admission(2, 21, T0, T0 + 3 * D)
    # Subject 3 (prevalent: HF on the index admission) with later admissions.
    source.patient(3)
    source.admission(3, 31, T0, T0 + 3 * D)
    source.diagnosis(3, 31, "4280", 9)
    source.admission(3, 32, T0 + 60 * D, T0 + 62 * D)
    source.diagnosis(3, 32, "4280", 9)
    return source


def followup_rows(tmp_path: Path, **kwargs) -> dict[int, dict]:
    source = followup_world(kwargs.pop("dod", None))
    paths = run_labels(tmp_path, source, [11, 21, 31], **kwargs)
    rows = pl.read_parquet(paths["followup"]).rows(named=True)
    assert sorted(r["subject_id"] for r in rows) == [1, 2, 3], f"one row per index admission, got {rows}"
    return {r["subject_id"]: r for r in rows}


def test_readmission_before_min_days_is_not_followup_and_censoring_is_at_last_discharge(tmp_path):
    # docs/CURATION.md, Labels: follow-up admissions start >= 30 days after the index discharge, so the HF readmission
    # at 10 days is not an event; the patient is censored at the discharge of the last follow-up admission.
    row = followup_rows(tmp_path, min_days=30)[1]
    assert row["has_followup"] is True, "the admission 100 days after discharge is follow-up"
    assert row["incident_hf"] is False, "the HF readmission 10 days after discharge is before min_days"
    assert row["followup_days"] == pytest.approx(days(INDEX_ADMIT, LATE_DISCH), abs=1e-6), (
        f"censoring: index admittime -> discharge of the last follow-up admission "
        f"({days(INDEX_ADMIT, LATE_DISCH):.6f} days), got {row['followup_days']}"
    )


def test_first_followup_admission_with_hf_code_is_the_event(tmp_path):
    row = followup_rows(tmp_path, min_days=0)[1]
    assert row["has_followup"] is True
    assert row["incident_hf"] is True, "with min_days 0 the readmission with an HF code is follow-up"
    assert row["followup_days"] == pytest.approx(days(INDEX_ADMIT, READMIT), abs=1e-6), (
        f"event time: index admittime -> admittime of the HF readmission "
        f"({days(INDEX_ADMIT, READMIT):.6f} days), got {row['followup_days']}"
    )


def test_event_is_the_earliest_of_several_hf_readmissions(tmp_path):
    source = Source()
    source.patient(1)
    source.admission(1, 11, T0, T0 + 4 * D)
    source.admission(1, 13, T0 + 120 * D, T0 + 125 * D)  # written first, but later
    source.diagnosis(1, 13, "4280", 9)
    source.admission(1, 12, T0 + 60 * D, T0 + 63 * D)
    source.diagnosis(1, 12, "I5023", 10)
    paths = run_labels(tmp_path, source, [11], min_days=30)
    row = pl.read_parquet(paths["followup"]).row(0, named=True)
    assert row["incident_hf"] is True
    assert row["followup_days"] == pytest.approx(60.0, abs=1e-6), "event time is the first HF readmission (day 60)"


@pytest.mark.parametrize(
    ("after_discharge", "followed"),
    [(30 * D, True), (30 * D - timedelta(seconds=1), False)],
    ids=["exactly-30-days", "one-second-short"],
)
def test_followup_starts_min_days_after_the_index_discharge(tmp_path, after_discharge, followed):
    # docs/CURATION.md, Labels: follow-up admissions start >= min_days after the index *discharge* (not admittime). The
    # index stay is 10 days, so both later admissions start > 30 days after the index admittime.
    source = Source()
    source.patient(1)
    source.admission(1, 11, T0, T0 + 10 * D)
    source.admission(1, 12, T0 + 10 * D + after_discharge, T0 + 10 * D + after_discharge + 2 * D)
    paths = run_labels(tmp_path, source, [11], min_days=30)
    row = pl.read_parquet(paths["followup"]).row(0, named=True)
    assert row["has_followup"] is followed, (
        f"an admission starting {after_discharge} after the index discharge: follow-up should be {followed}"
    )


def test_patient_without_later_admission_has_no_followup(tmp_path):
    row = followup_rows(tmp_path)[2]
    assert row["has_followup"] is False
    assert row["incident_hf"] is None, "no follow-up: incident_hf is unknown (null), not False"
    assert row["followup_days"] is None


def test_prevalent_patient_is_not_followed(tmp_path):
    row = followup_rows(tmp_path, min_days=0)[3]
    assert row["has_followup"] is False, "prevalent HF patients are not in the prognosis subset"
    assert row["incident_hf"] is None
    assert row["followup_days"] is None


@pytest.mark.parametrize(("censor_at_death", "end"), [(True, "dod"), (False, "discharge")])
def test_death_after_last_discharge_censors_only_when_configured(tmp_path, censor_at_death, end):
    dod = date(2150, 12, 1)
    assert datetime(dod.year, dod.month, dod.day) > LATE_DISCH, "test premise: death after the last discharge"
    row = followup_rows(tmp_path, min_days=30, censor_at_death=censor_at_death, dod=dod)[1]
    expected = days(INDEX_ADMIT, datetime(2150, 12, 1) if end == "dod" else LATE_DISCH)
    assert row["incident_hf"] is False
    assert row["followup_days"] == pytest.approx(expected, abs=1e-6), (
        f"censor_at_death={censor_at_death}: censored at the {end} ({expected:.6f} days), got {row['followup_days']}"
    )


def test_death_before_last_discharge_time_is_ignored(tmp_path):
    # dod is a date: death recorded on the day of the last discharge is midnight, before the discharge time.
    dod = LATE_DISCH.date()
    row = followup_rows(tmp_path, min_days=30, censor_at_death=True, dod=dod)[1]
    assert row["followup_days"] == pytest.approx(days(INDEX_ADMIT, LATE_DISCH), abs=1e-6), (
        "a dod earlier than the last follow-up discharge must not shorten follow-up"
    )


# ---------------------------------------------------------------------------------------------------
# assemble_cohort
# ---------------------------------------------------------------------------------------------------


def assemble(tmp_path: Path, attrition: Path | None = None) -> tuple[pl.DataFrame, Path]:
    source = attrition_world()
    source.diagnosis(3, 302, "I5022", 10)  # subject 3 prevalent; subject 1 not
    index, _ = run_index(tmp_path, source)
    cohort_dir = tmp_path / "cohort"
    raw = tmp_path / "parquet"
    codes = HF_CODE_LISTS["strict"]
    hf_admissions(raw / "diagnoses_icd.parquet", cohort_dir / "hf.parquet", icd9=codes["icd9"], icd10=codes["icd10"])
    prevalent_hf(
        cohort_dir / "index_admissions.parquet",
        raw / "admissions.parquet",
        cohort_dir / "hf.parquet",
        cohort_dir / "prevalent_hf.parquet",
        lookback_days=None,
    )
    followup(
        cohort_dir / "index_admissions.parquet",
        cohort_dir / "prevalent_hf.parquet",
        raw / "admissions.parquet",
        raw / "patients.parquet",
        cohort_dir / "hf.parquet",
        cohort_dir / "followup.parquet",
        min_days=30,
        censor_at_death=False,
    )
    assemble_cohort(
        index_admissions=cohort_dir / "index_admissions.parquet",
        prevalent_hf=cohort_dir / "prevalent_hf.parquet",
        followup=cohort_dir / "followup.parquet",
        attrition=attrition or cohort_dir / "attrition_eligibility.parquet",
        out=cohort_dir / "cohort.parquet",
        attrition_out=cohort_dir / "attrition.parquet",
    )
    return index, cohort_dir


def test_cohort_has_one_row_per_index_admission_with_the_cohort_columns_first(tmp_path):
    index, cohort_dir = assemble(tmp_path)
    cohort = pl.read_parquet(cohort_dir / "cohort.parquet")
    assert cohort.columns[: len(COHORT_COLUMNS)] == COHORT_COLUMNS, f"columns: {cohort.columns}"
    assert cohort.height == index.height == 2, "one cohort row per index admission"
    assert cohort["subject_id"].is_unique().all(), "a patient appears twice in the cohort"
    assert sorted(cohort.select("subject_id", "hadm_id").rows()) == sorted(index.select("subject_id", "hadm_id").rows())
    labels = {r["subject_id"]: r["prevalent_hf"] for r in cohort.iter_rows(named=True)}
    assert labels == {1: False, 3: True}, "subject 3 has an HF code on its index admission 302"
    written = pl.read_parquet(cohort_dir / "attrition.parquet")
    assert written.equals(pl.read_parquet(cohort_dir / "attrition_eligibility.parquet")), "attrition copied as is"


def test_cohort_refuses_an_attrition_that_does_not_reconcile(tmp_path):
    bad = tmp_path / "bad_attrition.parquet"
    pl.DataFrame(
        [
            (0, "admissions in source", 8, 4, 0, 0),
            (1, "age at admission < 18", 6, 3, 1, 1),  # 8 - 1 != 6
        ],
        schema={
            "reason_id": pl.Int64,
            "reason": pl.String,
            "n_records": pl.Int64,
            "n_subjects": pl.Int64,
            "excluded_records": pl.Int64,
            "excluded_subjects": pl.Int64,
        },
        orient="row",
    ).write_parquet(bad)
    with pytest.raises(RuntimeError, match="reconcile"):
        assemble(tmp_path, attrition=bad)


def test_label_rules_work_under_a_folder_whose_name_holds_a_quote(tmp_path):
    """Output paths reach DuckDB as quoted literals: a quote in a folder name neither breaks nor changes a query."""
    folder = tmp_path / "o'brien's results"
    folder.mkdir()
    source = Source()
    source.patient(1)
    source.admission(1, 11, T0, T0 + 4 * D)
    source.diagnosis(1, 11, "4280", 9)
    paths = run_labels(folder, source, [11])
    assert pl.read_parquet(paths["prevalent"])["prevalent_hf"].to_list() == [True]
    assert pl.read_parquet(paths["followup"]).height == 1
