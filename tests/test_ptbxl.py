"""PTB-XL external validation (paper §5.2, Table 4; hftri_mimic/ptbxl/dataset.py, workflow/rules/ptbxl.smk): the demo
tree
read the way PTB-XL's own example code reads the release, the MI / normal labels against an independent
computation, exclusions that add up, the metadata text, and `snakemake ptbxl` end to end on the demo."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import wfdb
import yaml
from conftest import REPO, snakemake, write_config
from scipy.ndimage import uniform_filter1d

from hftri_mimic.demo.ptbxl import DATABASE_COLUMNS, STATEMENT_COLUMNS, PtbxlDemoSpec, generate_ptbxl
from hftri_mimic.ptbxl.dataset import check_ptbxl_source, label_records, metadata_sentences

FOLDS = {"train": [1, 2, 3, 4, 5, 6, 7, 8], "val": [9], "test": [10]}


@pytest.fixture(scope="module")
def ptbxl_demo(tmp_path_factory) -> tuple[Path, pl.DataFrame]:
    root = tmp_path_factory.mktemp("ptbxl") / "ptb-xl"
    truth = generate_ptbxl(root, PtbxlDemoSpec(n_records=240, seed=7))
    return root, truth


def read_like_ptbxl_example(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ptbxl_database.csv and the diagnostic statements, loaded as PTB-XL's example code loads them."""
    database = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    database.scp_codes = database.scp_codes.apply(lambda x: ast.literal_eval(x))
    statements = pd.read_csv(root / "scp_statements.csv", index_col=0)
    return database, statements[statements.diagnostic == 1]


def test_demo_round_trips_through_the_public_layout(ptbxl_demo):
    root, truth = ptbxl_demo
    database, diagnostic = read_like_ptbxl_example(root)
    assert ["ecg_id", *database.columns] == DATABASE_COLUMNS, "ptbxl_database.csv columns differ from the release"
    statements = pd.read_csv(root / "scp_statements.csv", index_col=0)
    assert list(statements.columns) == STATEMENT_COLUMNS and statements.index.name is None
    assert set(diagnostic.diagnostic_class) == {"NORM", "MI", "STTC", "CD", "HYP"}
    assert len(database) == truth.height == 240
    assert all(isinstance(codes, dict) and codes for codes in database.scp_codes)
    assert database.strat_fold.between(1, 10).all() and set(database.sex) == {0, 1}
    assert (database.groupby("patient_id").strat_fold.nunique() == 1).all(), "folds must be patient-wise"
    # quirks of the real release
    assert database.height.isna().mean() > 0.4 and database.weight.isna().mean() > 0.3
    assert (database.age == 300).any(), "ages above 89 are written as 300"
    assert database.patient_id.duplicated().any(), "some patients have several records"
    assert any(v < 100 for codes in database.scp_codes for k, v in codes.items() if k in diagnostic.index)

    for ecg_id in database.index[:3]:
        signal, fields = wfdb.rdsamp(str(root / database.loc[ecg_id, "filename_hr"]))
        assert signal.shape == (5000, 12) and fields["fs"] == 500
        assert fields["sig_name"] == ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        assert fields["units"] == ["mV"] * 12
        # leads stored in PTB-XL's order (aVL before aVF, unlike MIMIC-IV-ECG): Goldberger's relations
        # on the beats, with the baseline wander (independent per lead) removed by a 0.5 s moving mean
        beats = signal - uniform_filter1d(signal, 250, axis=0)
        lead_i, lead_ii, avl, avf = beats[:, 0], beats[:, 1], beats[:, 4], beats[:, 5]

        def corr(a, b):
            return np.corrcoef(a, b)[0, 1]

        assert corr(avl, lead_i - lead_ii / 2) > max(0.75, corr(avl, lead_ii - lead_i / 2) + 0.1)
        assert corr(avf, lead_ii - lead_i / 2) > max(0.75, corr(avf, lead_i - lead_ii / 2) + 0.1)
        low, low_fields = wfdb.rdsamp(str(root / database.loc[ecg_id, "filename_lr"]))
        assert low.shape == (1000, 12) and low_fields["fs"] == 100
        header = wfdb.rdheader(str(root / database.loc[ecg_id, "filename_hr"]))
        assert header.fmt == ["16"] * 12 and header.adc_gain == [1000.0] * 12


def independent_labels(root: Path, min_likelihood: float, folds: dict, norm_only: bool) -> dict[int, object]:
    """ecg_id -> 1 (MI), 0 (normal) or the exclusion reason, computed from the files with pandas only."""
    database, diagnostic = read_like_ptbxl_example(root)
    fold_split = {f: s for s, fs in folds.items() for f in fs}
    expected = {}
    for ecg_id, row in database.iterrows():
        classes = {
            diagnostic.loc[code, "diagnostic_class"]
            for code, likelihood in row.scp_codes.items()
            if code in diagnostic.index and likelihood >= min_likelihood
        }
        if row.strat_fold not in fold_split:
            expected[ecg_id] = "fold_not_used"
        elif not classes:
            expected[ecg_id] = "no_diagnostic_statement"
        elif {"MI", "NORM"} <= classes:
            expected[ecg_id] = "mi_and_norm"
        elif "MI" in classes:
            expected[ecg_id] = 1
        elif classes == {"NORM"} or ("NORM" in classes and not norm_only):
            expected[ecg_id] = 0
        elif "NORM" in classes:
            expected[ecg_id] = "norm_with_other_class"
        else:
            expected[ecg_id] = "neither_mi_nor_norm"
    return expected


@pytest.mark.parametrize(
    ("min_likelihood", "folds", "norm_only"),
    [
        (100, FOLDS, True),
        (0, FOLDS, True),
        (50, {"train": [1, 2, 3, 4, 5, 6], "val": [7], "test": [9, 10]}, False),
    ],
)
def test_labels_equal_an_independent_computation(ptbxl_demo, min_likelihood, folds, norm_only):
    root, _ = ptbxl_demo
    kept, excluded = label_records(
        root / "ptbxl_database.csv",
        root / "scp_statements.csv",
        min_likelihood=min_likelihood,
        folds=folds,
        norm_only=norm_only,
    )
    expected = independent_labels(root, min_likelihood, folds, norm_only)
    got = {
        **dict(zip(kept["ecg_id"], kept["mi"].cast(pl.Int64), strict=True)),
        **dict(zip(excluded["ecg_id"], excluded["reason"], strict=True)),
    }
    assert kept.height + excluded.height == len(expected), "records in != kept + excluded"
    assert got == expected
    assert set(kept["split"]) == {"train", "val", "test"}
    split_of = {f: s for s, fs in folds.items() for f in fs}
    assert all(split_of[f] == s for f, s in kept.select("strat_fold", "split").iter_rows())
    assert kept["ecg_path"].str.starts_with("records500/").all()
    if min_likelihood == 100:  # the demo plants every exclusion the labels can make
        assert set(excluded["reason"]) >= {"no_diagnostic_statement", "neither_mi_nor_norm", "norm_with_other_class"}
        assert 0.2 < kept["mi"].mean() < 0.6


def test_metadata_text_uses_the_lab_template_and_skips_missing_values():
    assert metadata_sentences({"age": 300.0, "sex": 1, "height": None, "weight": 71.0}) == [
        "Age of the patient is 90 years",
        "Gender of the patient is female",
        "Weight of the patient is 71 kg",
    ]
    assert metadata_sentences({"age": 54.0, "sex": 0, "height": 181.0, "weight": None}) == [
        "Age of the patient is 54 years",
        "Gender of the patient is male",
        "Height of the patient is 181 cm",
    ]


def test_a_release_without_a_needed_column_is_named(tmp_path, ptbxl_demo):
    root, _ = ptbxl_demo
    check_ptbxl_source(root)
    broken = tmp_path / "broken"
    broken.mkdir()
    pd.read_csv(root / "ptbxl_database.csv").drop(columns="strat_fold").to_csv(broken / "ptbxl_database.csv")
    (broken / "scp_statements.csv").write_text((root / "scp_statements.csv").read_text())
    with pytest.raises(ValueError, match=r"ptbxl_database\.csv lacks the PTB-XL columns \['strat_fold'\]"):
        check_ptbxl_source(broken)
    with pytest.raises(ValueError, match=r"ptbxl_database\.csv is missing"):
        check_ptbxl_source(tmp_path)


def test_real_kind_checks_its_root_before_any_job(tmp_path, ptbxl_demo):
    root, _ = ptbxl_demo
    base = yaml.safe_load((REPO / "config.yaml").read_text())["ptbxl"]
    write_config(tmp_path, ptbxl={**base, "kind": "real", "root": str(root)})
    dry = snakemake(tmp_path, "-n", "ptbxl")
    assert "ptbxl_demo_source" not in dry.stdout and "ptbxl_labels" in dry.stdout
    write_config(tmp_path, ptbxl={**base, "kind": "real", "root": str(tmp_path / "nowhere")})
    failed = snakemake(tmp_path, "-n", "ptbxl", check=False)
    assert failed.returncode != 0 and "config ptbxl.root" in failed.stdout + failed.stderr


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param(
            {"folds": {"train": [1, 2, 3, 4, 5, 6, 7, 8], "val": [8], "test": [10]}},
            "config ptbxl.folds",
            id="fold_in_two_splits",
        ),
        pytest.param({"records": "records100"}, "config ptbxl.records", id="records100_below_min_fs"),
        pytest.param({"min_likelihood": 150}, "min_likelihood", id="likelihood_above_100"),
    ],
)
def test_wrong_ptbxl_config_fails_before_any_job_naming_the_key(tmp_path, change, named):
    base = yaml.safe_load((REPO / "config.yaml").read_text())["ptbxl"]
    write_config(tmp_path, ptbxl={**base, **change})
    failed = snakemake(tmp_path, "-n", "ptbxl", check=False)
    assert failed.returncode != 0 and named in failed.stdout + failed.stderr
    assert not (tmp_path / "results").exists()


def test_a_malformed_scp_codes_literal_is_an_exclusion_not_a_crash(tmp_path, ptbxl_demo):
    root, _ = ptbxl_demo
    database = pd.read_csv(root / "ptbxl_database.csv")
    database.loc[0, "scp_codes"] = "{'NORM': 100.0"  # cut short
    database.loc[1, "scp_codes"] = float("nan")
    database.to_csv(tmp_path / "ptbxl_database.csv", index=False)
    kept, excluded = label_records(
        tmp_path / "ptbxl_database.csv", root / "scp_statements.csv", min_likelihood=100, folds=FOLDS
    )
    bad = excluded.filter(reason="unreadable_scp_codes")["ecg_id"].to_list()
    assert bad == database["ecg_id"][:2].tolist()
    assert kept.height + excluded.height == len(database)


PTBXL_TEST = {
    "demo": {"n_records": 560, "seed": 20252},
    # a test set of two folds (about 120 records) so that the AUC comparison is not decided by a handful of records
    "folds": {"train": [1, 2, 3, 4, 5, 6, 7], "val": [8], "test": [9, 10]},
}
# shorter training than the default (early stopping comes at epoch 5-8 on this demo either way)
FAST_OPTIM = {"epochs": 40, "patience": 8, "ensemble": {"diagnosis": 2, "prognosis": 1}}


@pytest.mark.slow
def test_snakemake_ptbxl_writes_table4_and_the_ecg_adds_to_the_metadata(tmp_path):
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    train = {**base["train"], "optim": {**base["train"]["optim"], **FAST_OPTIM}}
    write_config(tmp_path, ptbxl={**base["ptbxl"], **PTBXL_TEST}, train=train)
    snakemake(tmp_path, "--cores", "2", "ptbxl", timeout=1500)
    out = tmp_path / "results/ptbxl"

    table = (out / "eval/TABLE4.md").read_text()
    assert "| ACC | TGMM |" in table and "| AUC | TGMM |" in table and "Lab+ECG" in table
    results = pl.read_parquet(out / "eval/diagnosis.parquet")
    auc = dict(results.filter(metric="auc").select("subset", "value").iter_rows())
    assert set(auc) == {"lab", "ecg", "lab+ecg"}
    assert (results["ci_low"] <= results["value"]).all() and (results["value"] <= results["ci_high"]).all()
    assert auc["lab+ecg"] > auc["lab"], f"the planted ECG signal did not add to the metadata: {auc}"
    assert auc["lab"] > 0.52 and auc["ecg"] > 0.6, f"each modality alone carries planted signal: {auc}"

    # records in = kept + excluded, at the labels and at the ECG stage, and in the attrition
    records = pl.read_parquet(out / "labels/records.parquet")
    excluded = pl.read_parquet(out / "labels/exclusions.parquet")
    assert records.height + excluded.height == 560
    ecg_index = pl.read_parquet(out / "ecg/index.parquet")
    ecg_excluded = pl.read_parquet(out / "ecg/exclusions.parquet")
    assert ecg_index.height + ecg_excluded.height == records.height
    manifest = pl.read_parquet(out / "hftri/manifest.parquet")
    assert manifest.height == ecg_index.height and manifest["prevalent_hf"].equals(manifest["mi"])
    attrition = pl.read_parquet(out / "hftri/attrition.parquet")
    assert attrition["n_records"][0] == 560 and attrition["n_records"][-1] == manifest.height
    assert attrition["excluded_records"].sum() == 560 - manifest.height
    truth = pl.read_parquet(tmp_path / "results/ptbxl/source_truth/records.parquet")
    flat = set(truth.filter(pl.col("flat_lead") >= 0)["ecg_id"]) & set(records["ecg_id"])
    assert flat <= set(ecg_excluded["ecg_study_id"]), "a record with a disconnected lead passed the ECG stage"
    splits = pl.read_parquet(out / "hftri/splits.parquet")
    assert splits.join(manifest, on="subject_id").filter(pl.col("split") != pl.col("split_right")).height == 0
