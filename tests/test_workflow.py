"""The workflow end to end: config validation, demo and real-MIMIC runs, attrition, params reruns, lint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from itertools import pairwise

import polars as pl
import pytest
import yaml
from conftest import REPO, base_config, planned_rules, snakemake, write_config
from reference_data import mimic_demo_hosp

from hftri_mimic.cohort.concepts import COHORT_COLUMNS, ecg_admissions


def test_the_window_table_counts_every_ecg_and_a_window_from_edregtime_takes_in_ed_ecgs(demo_run, tmp_path):
    """cohort/ecg_window.parquet places every ECG of the record list once; the demo's ED ECGs and clock offsets put
    records just before the default window, and start_from edregtime brings ED ECGs in. The datasheet shows it."""
    out = demo_run / "results"
    places = pl.read_parquet(out / "cohort/ecg_window.parquet")
    n_records = pl.read_parquet(out / "parquet/ecg_record_list.parquet").height
    assert places["n_records"].sum() == n_records
    counts = dict(places.select("place", "n_records").rows())
    assert counts["before_window"] > 0 and counts["away_from_admissions"] > 0 and counts["in_window"] > n_records / 2
    window = {**base_config()["cohort"]["ecg_window"], "start_from": "edregtime"}
    ecg_admissions(out / "parquet/admissions.parquet", out / "parquet/ecg_record_list.parquet",
                   out=tmp_path / "pairs.parquet", window=window, places_out=tmp_path / "places.parquet")  # fmt: skip
    from_ed = dict(pl.read_parquet(tmp_path / "places.parquet").select("place", "n_records").rows())
    gained = from_ed["in_window"] - counts["in_window"]
    assert gained > 0 and from_ed["before_window"] < counts["before_window"]
    assert "## Records and the admission windows" in (out / "hftri/DATASHEET.md").read_text()


def test_demo_run_writes_one_cohort_row_per_patient(demo_run):
    cohort = pl.read_parquet(demo_run / "results/cohort/cohort.parquet")
    assert cohort.columns[: len(COHORT_COLUMNS)] == COHORT_COLUMNS
    assert cohort["subject_id"].is_unique().all()
    assert cohort.height > 20, "the small demo should keep most patients"
    assert cohort["ecg_study_id"].null_count() == 0 and cohort["echo_study_id"].null_count() == 0
    assert (cohort["age"] >= 18).all()
    assert cohort["prevalent_hf"].null_count() == 0
    prevalent = cohort.filter("prevalent_hf")
    assert not prevalent["has_followup"].any() and prevalent["incident_hf"].null_count() == prevalent.height
    followed = cohort.filter("has_followup")
    assert followed["incident_hf"].null_count() == 0 and (followed["followup_days"] > 0).all()


def test_demo_cohort_agrees_with_the_generator_truth(demo_run):
    """The demo writes the HF code where its truth says so; the SQL must find exactly that."""
    cohort = pl.read_parquet(demo_run / "results/cohort/cohort.parquet")
    truth = pl.read_parquet(demo_run / "results/source_truth/patients.parquet")
    joined = cohort.join(truth, on="subject_id", suffix="_truth")
    assert joined.height == cohort.height
    assert (joined["prevalent_hf"] == joined["prevalent_hf_truth"]).all()


def test_attrition_reconciles(demo_run):
    attrition = pl.read_parquet(demo_run / "results/cohort/attrition.parquet").sort("reason_id")
    assert attrition.columns == [
        "reason_id",
        "reason",
        "n_records",
        "n_subjects",
        "excluded_records",
        "excluded_subjects",
    ]
    rows = attrition.rows(named=True)
    for prev, row in pairwise(rows):
        assert row["n_subjects"] == prev["n_subjects"] - row["excluded_subjects"], row["reason"]
        assert row["n_records"] == prev["n_records"] - row["excluded_records"], row["reason"]
    cohort = pl.read_parquet(demo_run / "results/cohort/cohort.parquet")
    assert rows[-1]["n_subjects"] == cohort.height
    assert sum(r["excluded_subjects"] for r in rows) > 0, "the demo should exclude some patients"


# Attrition wording -> the eligibility column of the criterion (docs/CURATION.md, Cohort)
CRITERION_OF_REASON = {
    "admission row excluded at ingest": "ingested",
    "no usable patients row": "has_patient",
    "age at admission <": "is_adult",
    "no configured lab item": "has_lab",
    "no ECG within": "has_ecg",
    "no echo study within": "has_echo",
    "not the index admission": "is_index",
}


def test_eligibility_reproduces_the_cohort_attrition(demo_run):
    """The attrition counted again from the eligibility table's criterion columns, by cumulative filters (not from
    its first_failed or reason columns), step by step."""
    eligibility = pl.read_parquet(demo_run / "results/cohort/eligibility.parquet")
    attrition = pl.read_parquet(demo_run / "results/cohort/attrition.parquet").sort("reason_id")
    assert eligibility.height == attrition["n_records"][0], "one row per admissions row of the source"
    left = eligibility
    for row in attrition.rows(named=True)[1:]:
        (criterion,) = [c for prefix, c in CRITERION_OF_REASON.items() if row["reason"].startswith(prefix)]
        left = left.filter(pl.col(criterion))
        assert (left.height, left["subject_id"].n_unique()) == (row["n_records"], row["n_subjects"]), row["reason"]
    index = pl.read_parquet(demo_run / "results/cohort/index_admissions.parquet")
    assert sorted(left["hadm_id"]) == sorted(index["hadm_id"])


def test_every_patient_has_one_status_that_adds_up_to_the_attrition_and_the_manifest(demo_run):
    results = demo_run / "results"
    status = pl.read_parquet(results / "cohort/patient_status.parquet")
    eligibility = pl.read_parquet(results / "cohort/eligibility.parquet")
    assert status["subject_id"].is_unique().all()
    assert set(status["subject_id"]) == set(eligibility["subject_id"])
    excluded = status.filter(~pl.col("in_dataset"))
    assert excluded.select("stage", "criterion", "reason_id", "reason").null_count().sum_horizontal().item() == 0
    assert excluded.height > 0 and set(excluded["stage"]) >= {"cohort"}
    manifest = pl.read_parquet(results / "hftri/manifest.parquet")
    assert set(status.filter("in_dataset")["subject_id"]) == set(manifest["subject_id"])
    attrition = pl.read_parquet(results / "hftri/attrition.parquet")
    per_step = dict(excluded.group_by("reason_id").len().iter_rows())
    for row in attrition.filter(pl.col("reason_id") > 0).rows(named=True):
        assert per_step.get(row["reason_id"], 0) == row["excluded_subjects"], row["reason"]
    # a patient removed at a cohort step has no admission past it
    furthest = eligibility.group_by("subject_id").agg(pl.col("reason_id").fill_null(10**6).max().alias("furthest"))
    cohort_left = excluded.filter(stage="cohort").join(furthest, on="subject_id")
    assert (cohort_left["reason_id"] == cohort_left["furthest"]).all()


def test_every_dataset_table_holds_the_manifest_patients(demo_run):
    hftri = demo_run / "results/hftri"
    patients = set(pl.read_parquet(hftri / "manifest.parquet")["subject_id"])
    for name in ("labs", "text", "splits"):
        assert set(pl.read_parquet(hftri / f"{name}.parquet")["subject_id"]) == patients, name
    index_patients = set(pl.read_parquet(demo_run / "results/cohort/index_admissions.parquet")["subject_id"])
    assert patients < index_patients, "the small demo loses some index patients to the ECG/echo stages"


def test_training_views_hold_each_task_its_own_columns(demo_run):
    """The training jobs read views: the encoders' inputs without labels, and per task its split rows with its own
    label columns, so that a criterion of one task leaves the other's view byte for byte as it was."""
    out = demo_run / "results"
    manifest = pl.read_parquet(out / "hftri/manifest.parquet")
    splits = pl.read_parquet(out / "hftri/splits.parquet")
    inputs = pl.read_parquet(out / "train/data/inputs.parquet")
    assert inputs["subject_id"].to_list() == sorted(manifest["subject_id"])
    assert not {"prevalent_hf", "incident_hf", "has_followup", "followup_days"} & set(inputs.columns)
    ecg = pl.read_parquet(out / "ecg/index.parquet").select("subject_id", "signal_sha256")
    digests = inputs.join(ecg, on="subject_id", how="left")
    assert (digests["ecg_signal_sha256"].eq_missing(digests["signal_sha256"])).all()
    assert inputs["ecg_signal_sha256"].drop_nulls().len() == inputs["has_ecg"].sum() > 0
    assert inputs["echo_clips_sha256"].drop_nulls().len() == inputs["has_echo"].sum() > 0
    for task, labels in {"diagnosis": {"prevalent_hf"}, "prognosis": {"has_followup", "incident_hf"}}.items():
        view = pl.read_parquet(out / f"train/data/{task}.parquet")
        own = splits.filter(task=task)
        assert view.select(own.columns).sort(own.columns).equals(own.sort(own.columns)), task
        assert labels <= set(view.columns)
        checked = view.join(manifest, on="subject_id", suffix="_manifest")
        for column in labels:
            assert checked[column].eq_missing(checked[f"{column}_manifest"]).all(), (task, column)
    diagnosis = pl.read_parquet(out / "train/data/diagnosis.parquet")
    assert not {"has_followup", "incident_hf", "followup_days"} & set(diagnosis.columns)


def rerun_plan(demo_run, tmp_path, **overrides) -> set[str]:
    """Rules a dry run would execute after changing config values in a copy of the finished run."""
    workdir = tmp_path / "copy"
    shutil.copytree(demo_run, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        if isinstance(value, dict) and isinstance(config[section][key], dict):
            config[section][key] = {**config[section][key], **value}
        else:
            config[section][key] = value
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return planned_rules(snakemake(workdir, "-n", "--cores", "2", "dataset"))


# After a cohort change the ECG and echo shard plans (checkpoints) rerun; a dry run cannot list the shard
# jobs, which are only known once the new plans exist.
SIGNALS = {"ecg_plan", "ecg_collect", "echo_shard_plan", "echo_collect"}
# what any cohort or label change reaches
FINAL = {"attrition", "manifest", "splits", "training_views", "text_tokens", "datasheet", "dataset"}
LABELS = {"followup", "cohort"}
EHR = {"lab_values", "omr_measures", "history_groups", "drug_classes", "lab_text", "demo_tokenizer", "text_tokens"}


def test_unchanged_config_plans_nothing(demo_run, tmp_path):
    assert rerun_plan(demo_run, tmp_path) == set()


def reversed_keys(value, path=()):
    """Every mapping with its keys in reverse order, except history groups and drug classes (their order is the
    lab text's order, so it is content)."""
    if isinstance(value, dict):
        keep = path in {("dataset", "history_groups"), ("dataset", "drug_classes")}
        items = list(value.items()) if keep else list(reversed(value.items()))
        return {key: reversed_keys(item, (*path, key)) for key, item in items}
    return value


def test_config_resaved_with_other_key_order_plans_nothing(demo_run, tmp_path):
    """Only the values count: the same config written with its keys in another order reruns nothing."""
    workdir = tmp_path / "copy"
    shutil.copytree(demo_run, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    (workdir / "config.yaml").write_text(yaml.safe_dump(reversed_keys(config), sort_keys=False))
    assert planned_rules(snakemake(workdir, "-n", "--cores", "2", "dataset")) == set()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"labels__followup_min_days": 60}, LABELS | FINAL),
        ({"labels__censor_at_death": True}, LABELS | FINAL),
        ({"labels__prevalent_lookback_days": 365}, {"prevalent_hf"} | LABELS | FINAL),
        ({"labels__hf_codes": "charlson"}, {"hf_admissions", "prevalent_hf"} | LABELS | FINAL),
        # thresholds apply to the shards' stored measurements: no shard reruns
        ({"ecg__quality_min": "Excellent"}, {"ecg_collect"} | FINAL),
        ({"ecg__clip_fraction": 0.02}, {"ecg_collect"} | FINAL),
        # processing reruns the shards
        ({"ecg__lowpass_hz": 35.0}, {"ecg_shard", "ecg_collect"} | FINAL),
        ({"echo__mask_min_std": 4.0}, {"view_classifier_demo", "echo_shard", "echo_collect"} | FINAL),
        (
            {"dataset__drugs_before_admission": True},
            {"drug_classes", "lab_text", "demo_tokenizer", "text_tokens", "datasheet", "dataset"},
        ),
        ({"dataset__splits": {"seed": 1}}, {"splits", "training_views", "datasheet", "dataset"}),
        ({"cohort__min_age": 21}, {"index_admissions", "prevalent_hf"} | LABELS | SIGNALS | EHR | FINAL),
        (
            {"cohort__lab_itemids": base_config()["cohort"]["lab_itemids"][:-1]},
            {"lab_admissions", "index_admissions", "prevalent_hf"} | LABELS | SIGNALS | EHR | FINAL,
        ),
        (
            {"cohort__ecg_window": {"start_from": "admittime", "start_offset_hours": -6, "end_offset_hours": 0}},
            {"ecg_admissions", "index_admissions", "prevalent_hf"} | LABELS | SIGNALS | EHR | FINAL,
        ),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else "plan",
)
def test_changing_a_criterion_reruns_only_what_depends_on_it(demo_run, tmp_path, change, expected):
    assert rerun_plan(demo_run, tmp_path, **change) == expected


@pytest.mark.parametrize(
    ("section", "bad", "named"),
    [
        ("source", {"kind": "mimik"}, "kind"),
        ("cohort", {"min_age": "adult"}, "min_age"),
        ("labels", {"hf_codes": "broad"}, "hf_codes"),
        ("labels", {"followup_min_days": -3}, "followup_min_days"),
    ],
)
def test_invalid_config_fails_before_any_job_naming_the_key(tmp_path, section, bad, named):
    write_config(tmp_path, **{section: bad})
    proc = snakemake(tmp_path, "--cores", "1", "all", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert named in message, f"error should name {named!r}:\n{message[-2000:]}"
    assert not (tmp_path / "results").exists(), "no job may run with an invalid config"


def test_misspelt_config_key_is_rejected(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["labels"]["followup_min_dayz"] = 30
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "--cores", "1", "all", check=False)
    assert proc.returncode != 0 and "followup_min_dayz" in proc.stdout + proc.stderr


def test_mimic_source_missing_table_is_named_before_any_job(tmp_path):
    hosp = tmp_path / "hosp"
    shutil.copytree(mimic_demo_hosp(), hosp)
    (hosp / "omr.csv.gz").unlink()
    write_config(
        tmp_path,
        source={"kind": "mimic", "hosp_root": str(hosp), "ecg_root": None, "echo_root": None},
        cohort={"require_modalities": ["lab"]},
    )
    proc = snakemake(tmp_path, "--cores", "1", "all", check=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "omr.csv.gz" in message and "hosp_root" in message, message[-2000:]


def independent_prevalent_hf(hosp, lab_itemids, codes) -> pl.DataFrame:
    """The cohort and label definitions (docs/CURATION.md, Cohort and Labels) written with polars, apart from the
    workflow's SQL: adult admissions with a configured lab item; first such admission per patient; HF code on it or
    any earlier admission."""
    patients = pl.read_csv(hosp / "patients.csv.gz")
    admissions = pl.read_csv(hosp / "admissions.csv.gz", try_parse_dates=True)
    labs = pl.read_csv(hosp / "labevents.csv.gz", infer_schema_length=0).select("hadm_id", "itemid")
    lab_hadm = labs.filter(pl.col("itemid").cast(pl.Int64).is_in(lab_itemids), pl.col("hadm_id").is_not_null())
    lab_hadm = lab_hadm["hadm_id"].cast(pl.Int64).unique()
    index = (
        admissions.join(patients, on="subject_id")
        .filter((pl.col("anchor_age") + pl.col("admittime").dt.year() - pl.col("anchor_year")) >= 18)
        .filter(pl.col("hadm_id").is_in(lab_hadm.to_list()))
        .sort("admittime", "hadm_id")
        .group_by("subject_id", maintain_order=True)
        .first()
        .select("subject_id", pl.col("admittime").alias("index_time"), pl.col("hadm_id").alias("index_hadm"))
    )
    diagnoses = pl.read_csv(hosp / "diagnoses_icd.csv.gz", schema_overrides={"icd_code": pl.String})

    def matches(version: int) -> pl.Expr:
        prefixes = [c.rstrip("*") for c in codes[f"icd{version}"] if c.endswith("*")]
        exact = [c for c in codes[f"icd{version}"] if not c.endswith("*")]
        code = pl.col("icd_code").str.replace_all(".", "", literal=True).str.to_uppercase()
        return (pl.col("icd_version") == version) & (
            code.is_in(exact) | pl.any_horizontal([code.str.starts_with(p) for p in prefixes] or [pl.lit(False)])
        )

    hf_hadm = diagnoses.filter(matches(9) | matches(10))["hadm_id"].unique()
    hf_times = admissions.filter(pl.col("hadm_id").is_in(hf_hadm.to_list())).select(
        "subject_id", "hadm_id", "admittime"
    )
    flagged = (
        index.join(hf_times, on="subject_id", how="left")
        .with_columns(hit=(pl.col("hadm_id") == pl.col("index_hadm")) | (pl.col("admittime") < pl.col("index_time")))
        .group_by("subject_id")
        .agg(pl.col("hit").fill_null(False).any().alias("prevalent_hf"))
    )
    return flagged.sort("subject_id")


def test_real_mimic_demo_hosp_only_prevalent_hf_matches_independent_computation(mimic_run):
    hosp = mimic_demo_hosp()
    tmp_path = mimic_run
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    expected = independent_prevalent_hf(
        hosp, config["cohort"]["lab_itemids"], config["labels"]["hf_code_lists"]["strict"]
    )
    cohort = pl.read_parquet(tmp_path / "results/cohort/cohort.parquet").select("subject_id", "prevalent_hf")
    assert cohort.height == expected.height > 50
    assert cohort.sort("subject_id").equals(expected), "prevalent HF differs from the independent computation"
    assert 0 < cohort["prevalent_hf"].sum() < cohort.height
    assert not (tmp_path / "results/parquet/ecg_record_list.parquet").exists(), "no ECG source: no ECG ingest"


def test_snakemake_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in output, output[-4000:]
