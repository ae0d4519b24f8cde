"""The HFTri-MIMIC dataset (docs/CURATION.md, Dataset): EHR features checked against independent computations on the
real MIMIC-IV demo, lab text, tokens, splits, manifest and reproducibility."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import SMALL_DEMO, content_hashes, snakemake, write_config
from reference_data import mimic_demo_hosp

from hftri_mimic.dataset.manifest import assemble_manifest
from hftri_mimic.dataset.text import build_demo_vocab, fit_texts, join_sentences, load_tokenizer, patient_sentences


def config_of(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def read_hosp(name: str, **kwargs) -> pl.DataFrame:
    return pl.read_csv(mimic_demo_hosp() / f"{name}.csv.gz", try_parse_dates=True, **kwargs)


def test_lab_values_on_the_real_demo_match_an_independent_computation(mimic_run):
    """Hosp-only cohort: reference = admittime, so each item's value is the one charted in the index
    admission closest to admission (storetime rule off), ties to the earlier charttime then labevent_id."""
    itemids = config_of(mimic_run)["cohort"]["lab_itemids"]
    index = pl.read_parquet(mimic_run / "results/cohort/index_admissions.parquet")
    labs = read_hosp("labevents", infer_schema_length=0).with_columns(
        pl.col("labevent_id", "subject_id", "itemid").cast(pl.Int64),
        pl.col("hadm_id").cast(pl.Float64).cast(pl.Int64),
        pl.col("charttime").str.to_datetime("%Y-%m-%d %H:%M:%S"),
    )
    expected = (
        labs.filter(pl.col("itemid").is_in(itemids), pl.col("value").is_not_null(), pl.col("value") != "___")
        .join(index.select("subject_id", "hadm_id", "admittime", "dischtime"), on=["subject_id", "hadm_id"])
        .filter(pl.col("charttime").is_between(pl.col("admittime"), pl.col("dischtime")))
        .with_columns(gap=(pl.col("charttime") - pl.col("admittime")).abs())
        .sort("gap", "charttime", "labevent_id")
        .group_by("subject_id", "itemid", maintain_order=True)
        .first()
        .select("subject_id", "itemid", "value")
        .sort("subject_id", "itemid")
    )
    ours = pl.read_parquet(mimic_run / "results/dataset/lab_values.parquet").select("subject_id", "itemid", "value")
    assert expected.height > 500
    assert ours.sort("subject_id", "itemid").equals(expected)


def test_omr_measures_on_the_real_demo_match_an_independent_computation(mimic_run):
    index = pl.read_parquet(mimic_run / "results/cohort/index_admissions.parquet")
    omr = read_hosp("omr", schema_overrides={"result_value": pl.String})
    convert = {
        "Height (Inches)": ("height_cm", 2.54),
        "Weight (Lbs)": ("weight_kg", 0.45359237),
        "BMI (kg/m2)": ("bmi", 1.0),
    }
    bounds = {"height_cm": (100, 250), "weight_kg": (20, 350), "bmi": (10, 100)}
    rows = []
    for subject_id, admittime in index.select("subject_id", "admittime").iter_rows():
        mine = omr.filter(pl.col("subject_id") == subject_id, pl.col("chartdate") <= admittime.date())
        for name, (measure, factor) in convert.items():
            candidates = []
            for row in mine.filter(pl.col("result_name") == name).iter_rows(named=True):
                try:
                    value = float(row["result_value"]) * factor
                except ValueError:
                    continue
                low, high = bounds[measure]
                if low <= value <= high:
                    candidates.append((row["chartdate"], row["seq_num"], -value, value))
            if candidates:
                rows.append((subject_id, measure, max(candidates)[3]))
    expected = pl.DataFrame(rows, schema=["subject_id", "measure", "value"], orient="row").sort("subject_id", "measure")
    ours = pl.read_parquet(mimic_run / "results/dataset/omr_measures.parquet").select("subject_id", "measure", "value")
    ours = ours.sort("subject_id", "measure")
    assert expected.height > 50
    assert ours.select("subject_id", "measure").equals(expected.select("subject_id", "measure"))
    assert (ours["value"] - expected["value"]).abs().max() < 1e-9


def independent_history(index: pl.DataFrame, groups: dict, include_index: bool) -> set[tuple[int, str]]:
    admissions = read_hosp("admissions")
    diagnoses = read_hosp("diagnoses_icd", schema_overrides={"icd_code": pl.String})
    joined = (
        index.select("subject_id", pl.col("admittime").alias("index_time"), pl.col("hadm_id").alias("index_hadm"))
        .join(admissions.select("subject_id", "hadm_id", "admittime"), on="subject_id")
        .filter(
            (pl.col("admittime") < pl.col("index_time")) | (pl.col("hadm_id") == pl.col("index_hadm"))
            if include_index
            else pl.col("admittime") < pl.col("index_time")
        )
        .join(diagnoses, on=["subject_id", "hadm_id"])
    )
    rows = set()
    for subject_id, code, version in joined.select("subject_id", "icd_code", "icd_version").iter_rows():
        code = code.replace(".", "").upper()
        for name, lists in groups.items():
            for pattern in lists[f"icd{version}"]:
                if code.startswith(pattern[:-1]) if pattern.endswith("*") else code == pattern:
                    rows.add((subject_id, name))
    return rows


def test_history_groups_on_the_real_demo_match_an_independent_computation(mimic_run, tmp_path):
    from hftri_mimic.dataset.ehr import history_groups

    groups = config_of(mimic_run)["dataset"]["history_groups"]
    out = mimic_run / "results"
    index = pl.read_parquet(out / "cohort/index_admissions.parquet")
    ours = pl.read_parquet(out / "dataset/history.parquet")
    earlier = independent_history(index, groups, include_index=False)
    assert set(ours.iter_rows()) == earlier and earlier, "history from earlier admissions"
    # The same concept with the index admission's codes counted too (dataset.history_include_index_admission).
    history_groups(
        out / "cohort/index_admissions.parquet",
        out / "parquet/admissions.parquet",
        out / "parquet/diagnoses_icd.parquet",
        tmp_path / "h.parquet",
        groups,
        include_index_admission=True,
    )
    with_index = independent_history(index, groups, include_index=True)
    assert set(pl.read_parquet(tmp_path / "h.parquet").iter_rows()) == with_index
    assert len(with_index) > 50


def test_hosp_only_dataset_has_a_manifest_without_signals(mimic_run):
    manifest = pl.read_parquet(mimic_run / "results/hftri/manifest.parquet")
    cohort = pl.read_parquet(mimic_run / "results/cohort/cohort.parquet")
    assert manifest.height == cohort.height
    assert not manifest["has_ecg"].any() and not manifest["has_echo"].any()
    assert manifest["has_lab"].mean() > 0.9
    assert (mimic_run / "results/hftri/DATASHEET.md").is_file()


def test_golden_text_for_one_demo_patient():
    row = {"age": 71.0, "gender": "F", "race": "WHITE", "height_cm": 160.02, "weight_kg": None, "bmi": 27.1}
    labs = [
        {"label": "Creatinine", "fluid": "Blood", "value": "1.2", "valueuom": "mg/dL"},
        {"label": "Troponin T", "fluid": "Blood", "value": "<0.01", "valueuom": "ng/mL"},
        {"label": "INR(PT)", "fluid": "Blood", "value": "1.3", "valueuom": None},
    ]
    text = join_sentences(patient_sentences(row, labs, ["hypertension", "atrial_fibrillation"], []))
    assert text == (
        "Age of the patient is 71 years. Gender of the patient is female. Race of the patient is white. "
        "Height of the patient is 160 cm. BMI of the patient is 27.1 kg/m2. "
        "Creatinine of the blood is 1.2 mg/dL. Troponin T of the blood is <0.01 ng/mL. "
        "INR(PT) of the blood is 1.3. Medical history of the patient is hypertension, atrial fibrillation."
    ), "missing weight and an empty drug history must leave no sentence"


def test_demo_text_matches_its_own_tables(demo_run):
    """Every sentence of a demo patient's text comes from the feature tables, nothing else."""
    out = demo_run / "results"
    texts = pl.read_parquet(out / "hftri/text.parquet")
    values = pl.read_parquet(out / "dataset/lab_values.parquet")
    subject = values["subject_id"][0]
    text = texts.filter(pl.col("subject_id") == subject)["text"].item()
    for row in values.filter(pl.col("subject_id") == subject).iter_rows(named=True):
        assert f"{row['label']} of the blood is {row['value']} {row['valueuom']}" in text
    assert "None" not in text and "null" not in text
    assert texts["n_tokens"].max() <= 512 and not texts["truncated"].any()


def test_token_overflow_is_an_error_or_a_truncation(tmp_path):
    texts = pl.DataFrame(
        {
            "subject_id": [1, 2],
            "text": [
                "Age of the patient is 70 years. Sodium of the blood is "
                "140 mEq/L. Drug history of the patient is statins.",
                "Age of the patient is 50 years.",
            ],
            "n_sentences": [3, 1],
            "n_lab_values": [1, 0],
        }
    )
    build_demo_vocab(texts["text"].to_list(), tmp_path, vocab_size=200)
    tokenizer = load_tokenizer(tmp_path)
    full = fit_texts(texts, tokenizer, 512, "error")
    limit = int(full["n_tokens"].min()) + 2
    with pytest.raises(ValueError, match="1 lab texts exceed"):
        fit_texts(texts, tokenizer, limit, "error")
    cut = fit_texts(texts, tokenizer, limit, "truncate")
    assert cut["n_tokens"].max() <= limit and cut["truncated"].to_list() == [True, False]
    assert cut["text"][0].startswith("Age of the patient is 70 years.")


def test_splits_are_disjoint_complete_stratified_and_cover_folds(demo_run):
    out = demo_run / "results"
    manifest = pl.read_parquet(out / "hftri/manifest.parquet")
    splits = pl.read_parquet(out / "hftri/splits.parquet")
    diagnosis = splits.filter(pl.col("task") == "diagnosis")
    assert diagnosis["subject_id"].is_unique().all() and set(diagnosis["subject_id"]) == set(manifest["subject_id"])
    sizes = dict(diagnosis.group_by("split").len().rows())
    assert abs(sizes["train"] / manifest.height - 5 / 7) < 0.03 and abs(sizes["test"] / manifest.height - 1 / 7) < 0.03
    overall = manifest["prevalent_hf"].mean()
    for name, group in diagnosis.join(manifest, on="subject_id").group_by("split"):
        assert abs(group["prevalent_hf"].mean() - overall) <= 0.02 + 0.5 / group.height, (
            f"{name}: prevalent share {group['prevalent_hf'].mean():.3f} vs {overall:.3f}"
        )
    prognosis = splits.filter(pl.col("task") == "prognosis").join(manifest, on="subject_id")
    followed = set(manifest.filter("has_followup")["subject_id"])
    assert set(prognosis["subject_id"]) == followed
    for repeat, group in prognosis.group_by("repeat"):
        tests = group.filter(pl.col("split") == "test")["subject_id"]
        assert tests.is_unique().all() and set(tests) == followed, f"repeat {repeat}: each patient tested once"
        for _, fold in group.group_by("fold"):
            assert fold["subject_id"].is_unique().all() and set(fold["subject_id"]) == followed
    events = manifest.filter("has_followup")["incident_hf"].mean()
    for _, group in prognosis.filter(pl.col("split") == "test").group_by("repeat", "fold"):
        assert abs(group["incident_hf"].mean() - events) <= 0.02 + 0.5 / group.height


@pytest.mark.slow
def test_two_runs_give_identical_outputs(demo_run, tmp_path):
    write_config(tmp_path, demo=SMALL_DEMO)
    snakemake(tmp_path, "--cores", "2", "dataset")
    for folder in ("hftri", "cohort", "ecg", "echo"):
        first, second = content_hashes(demo_run / "results" / folder), content_hashes(tmp_path / "results" / folder)
        assert first and first == second, f"{folder}: outputs differ between two runs with the same config"
    for name in ("manifest", "labs", "text", "splits", "attrition"):
        a = (demo_run / f"results/hftri/{name}.parquet").read_bytes()
        b = (tmp_path / f"results/hftri/{name}.parquet").read_bytes()
        assert a == b, f"hftri/{name}.parquet is not byte-identical"


def test_demo_run_produces_the_whole_dataset_folder(demo_run):
    hftri = demo_run / "results/hftri"
    for name in (
        "manifest.parquet",
        "labs.parquet",
        "text.parquet",
        "splits.parquet",
        "attrition.parquet",
        "DATASHEET.md",
    ):
        assert (hftri / name).is_file(), name
    figures = {p.name for p in (hftri / "figures").glob("*.png")}
    assert {"non_missing_rate.png", "history_by_cohort.png", "views_present.png", "frames_per_view.png"} <= figures
    manifest = pl.read_parquet(hftri / "manifest.parquet")
    assert manifest["has_ecg"].all() and manifest["has_echo"].all()
    assert (manifest["n_views_present"] >= 1).all()
    row = manifest.row(0, named=True)
    assert (demo_run / "results" / row["ecg_zarr"]).is_dir() and (demo_run / "results" / row["echo_zarr"]).is_dir()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in ("manifest.parquet", "labs.parquet", "text.parquet", "splits.parquet", "DATASHEET.md"):
        assert f"hftri/{name}" in readme, f"README must document hftri/{name}"


@pytest.mark.parametrize("modality", ["ecg", "echo"])
def test_a_required_modality_with_no_usable_record_left_is_an_error(demo_run, tmp_path, modality):
    """Every cohort record of a required modality excluded by its stage (e.g. every ECG in millivolts read as
    microvolts): an error naming the modality and where the reasons are, never an empty dataset; the same stage
    output with the modality not required leaves a dataset without it."""
    out = demo_run / "results"
    indexes = {m: out / f"{m}/index.parquet" for m in ("ecg", "echo")}
    none_left = tmp_path / f"{modality}_index.parquet"
    pl.read_parquet(indexes[modality]).clear().write_parquet(none_left)
    indexes[modality] = none_left
    inputs = {"cohort": out / "cohort/cohort.parquet", "lab_values": out / "dataset/lab_values.parquet"}
    with pytest.raises(RuntimeError, match=rf"no usable {modality} record is left.*{modality}/exclusions.parquet"):
        assemble_manifest(
            **inputs, out=tmp_path / "manifest.parquet", required=["lab", "ecg", "echo"],
            ecg_index=indexes["ecg"], echo_index=indexes["echo"],
        )  # fmt: skip
    assert not (tmp_path / "manifest.parquet").exists()
    other = "echo" if modality == "ecg" else "ecg"
    manifest = assemble_manifest(
        **inputs, out=tmp_path / "manifest.parquet", required=["lab", other],
        ecg_index=indexes["ecg"], echo_index=indexes["echo"],
    )  # fmt: skip
    assert manifest.height > 50 and not manifest[f"has_{modality}"].any() and manifest[f"has_{other}"].all()
