"""A real-shaped run (issue #22): the 100 real patients of the open MIMIC-IV demo's hosp tables, with ECG records and
echo studies written for their real admissions (hftri_mimic/demo/real_shaped.py: during stays, in the emergency
department before admittime, outpatient, with cart clock offsets, stills and several DICOM kinds), run with
`source.kind: mimic` through `all` at the test demo's small model sizes. Its cohort and labels are computed again
here, independently of the SQL concepts, from the CSV files."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import base_config, snakemake, write_train_config
from reference_data import mimic_demo_hosp

from hftri_mimic.demo.real_shaped import write_real_shaped_signals
from hftri_mimic.echo.view_classifier import ViewClassifierConfig, build_view_classifier, save_view_classifier

CONFIG = base_config()


@pytest.fixture(scope="module")
def real_shaped(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("real_shaped")
    counts = write_real_shaped_signals(mimic_demo_hosp(), workdir / "physionet", workers=2)
    assert (counts["patients"], counts["admissions"]) == (100, 275)
    # A real echo source needs view-classifier weights (EchoPrime's in a real run): a randomly initialised one of the
    # demo's size stands in, so every cine gets some view.
    weights = workdir / "view_classifier.pt"
    save_view_classifier(build_view_classifier(ViewClassifierConfig(variant="convnext_mini", input_size=64)), weights)
    source = workdir / "physionet/source"
    write_train_config(
        workdir,
        source={"kind": "mimic", "hosp_root": str(mimic_demo_hosp()), "ecg_root": str(source / "ecg"),
                "echo_root": str(source / "echo")},
        echo={**CONFIG["echo"], "view_classifier": {**CONFIG["echo"]["view_classifier"], "weights": str(weights)}},
    )  # fmt: skip
    snakemake(workdir, "--cores", "2", "all", timeout=2400)
    return workdir


def read_csv(path: Path, **kwargs) -> pl.DataFrame:
    return pl.read_csv(path, try_parse_dates=True, infer_schema_length=None, **kwargs)


def expected_index_admissions(hosp: Path, source: Path) -> pl.DataFrame:
    """cohort criteria 1-5 of docs/CURATION.md, from the CSV files: adult (anchor logic), a configured lab item on the
    admission, an ECG and an echo study within [admittime, dischtime]; the first such admission per patient."""
    admissions = read_csv(hosp / "admissions.csv.gz").select("subject_id", "hadm_id", "admittime", "dischtime")
    patients = read_csv(hosp / "patients.csv.gz").select("subject_id", "anchor_age", "anchor_year")
    labs = (
        read_csv(hosp / "labevents.csv.gz", columns=["hadm_id", "itemid"])
        .filter(pl.col("itemid").is_in(CONFIG["cohort"]["lab_itemids"]) & pl.col("hadm_id").is_not_null())
        .select("hadm_id").unique()
    )  # fmt: skip
    ecgs = read_csv(source / "ecg/record_list.csv").select("subject_id", pl.col("ecg_time").alias("t"))
    echoes = read_csv(source / "echo/echo-study-list.csv").select("subject_id", pl.col("study_datetime").alias("t"))

    def within(records: pl.DataFrame) -> pl.Series:
        joined = admissions.join(records, on="subject_id").filter(
            pl.col("t").is_between(pl.col("admittime"), pl.col("dischtime"))
        )
        return joined["hadm_id"].unique()

    age = pl.col("anchor_age") + pl.col("admittime").dt.year() - pl.col("anchor_year")
    return (
        admissions.join(patients, on="subject_id")
        .filter(age >= CONFIG["cohort"]["min_age"])
        .filter(pl.col("hadm_id").is_in(labs["hadm_id"].to_list()))
        .filter(pl.col("hadm_id").is_in(within(ecgs).to_list()) & pl.col("hadm_id").is_in(within(echoes).to_list()))
        .sort("subject_id", "admittime", "hadm_id")
        .group_by("subject_id", maintain_order=True)
        .first()
        .select("subject_id", "hadm_id", "admittime", "dischtime")
    )  # fmt: skip


def expected_labels(hosp: Path, index: pl.DataFrame) -> pl.DataFrame:
    """Prevalent HF (an HF code of the strict list on the index or an earlier admission) and, for the others, incident
    HF over follow-up admissions starting >= followup_min_days after the index discharge (docs/CURATION.md, Labels)."""
    codes = CONFIG["labels"]["hf_code_lists"]["strict"]
    admissions = read_csv(hosp / "admissions.csv.gz").select("subject_id", "hadm_id", "admittime", "dischtime")
    diagnoses = read_csv(hosp / "diagnoses_icd.csv.gz", schema_overrides={"icd_code": pl.String})

    def matches(version: int) -> pl.Expr:
        code = pl.col("icd_code").str.strip_chars().str.replace_all(".", "", literal=True).str.to_uppercase()
        patterns = codes[f"icd{version}"]
        exact = [p for p in patterns if not p.endswith("*")]
        prefixes = [p[:-1] for p in patterns if p.endswith("*")]
        hit = code.is_in(exact)
        for prefix in prefixes:
            hit = hit | code.str.starts_with(prefix)
        return (pl.col("icd_version") == version) & hit

    hf_hadm = diagnoses.filter(matches(9) | matches(10))["hadm_id"].unique().to_list()
    later = index.join(admissions, on="subject_id", suffix="_a")
    prevalent = (
        later.filter((pl.col("hadm_id_a") == pl.col("hadm_id")) | (pl.col("admittime_a") < pl.col("admittime")))
        .group_by("subject_id")
        .agg(prevalent_hf=pl.col("hadm_id_a").is_in(hf_hadm).any())
    )
    min_days = pl.duration(days=CONFIG["labels"]["followup_min_days"])
    followup = (
        later.filter(pl.col("admittime_a") >= pl.col("dischtime") + min_days)
        .group_by("subject_id")
        .agg(has_followup=pl.len() > 0, incident_hf=pl.col("hadm_id_a").is_in(hf_hadm).any())
    )
    return (
        index.join(prevalent, on="subject_id")
        .join(followup, on="subject_id", how="left")
        .with_columns(has_followup=pl.col("has_followup").fill_null(False) & ~pl.col("prevalent_hf"))
        .with_columns(incident_hf=pl.when(pl.col("has_followup")).then(pl.col("incident_hf")))
        .select("subject_id", "prevalent_hf", "has_followup", "incident_hf")
        .sort("subject_id")
    )


@pytest.mark.slow
def test_the_real_shaped_run_has_the_independently_computed_cohort_and_labels(real_shaped):
    out = real_shaped / "results"
    hosp, source = mimic_demo_hosp(), real_shaped / "physionet/source"
    expected = expected_index_admissions(hosp, source)
    index = pl.read_parquet(out / "cohort/index_admissions.parquet").sort("subject_id")
    assert expected.height >= 30, "enough real patients with all three modalities to train on"
    assert index.select("subject_id", "hadm_id").equals(expected.select("subject_id", "hadm_id"))

    labels = pl.read_parquet(out / "cohort/cohort.parquet").select(
        "subject_id", "prevalent_hf", "has_followup", "incident_hf"
    ).sort("subject_id")  # fmt: skip
    assert labels.equals(expected_labels(hosp, expected))
    assert 0 < labels["prevalent_hf"].sum() < labels.height, "both classes among real patients"


@pytest.mark.slow
def test_the_real_shaped_run_counts_the_records_outside_the_windows_and_trains(real_shaped):
    out = real_shaped / "results"
    places = dict(pl.read_parquet(out / "cohort/ecg_window.parquet").select("place", "n_records").rows())
    n_ecgs = pl.read_csv(real_shaped / "physionet/source/ecg/record_list.csv").height
    assert sum(places.values()) == n_ecgs
    assert places["before_window"] > 0 and places["away_from_admissions"] > 0, "ED, clock-offset and outpatient ECGs"
    dicoms = pl.read_parquet(out / "echo/dicoms.parquet")
    assert dicoms.filter(pl.col("reason") == "single_frame").height > 0.3 * dicoms.height, "stills skipped by name"
    undecoded = dicoms.filter(pl.col("reason").is_in(["unsupported_transfer_syntax", "unreadable"]))
    assert undecoded.height == 0, "every kind of DICOM decodes"
    manifest = pl.read_parquet(out / "hftri/manifest.parquet")
    assert manifest.height >= 25 and manifest["has_ecg"].all() and manifest["has_echo"].all()
    diagnosis = pl.read_parquet(out / "eval/diagnosis.parquet")
    assert diagnosis.filter(subset="lab+ecg+echo", metric="auc")["value"].is_finite().all()
