"""Baselines and ablations against TGMM (workflow/rules/compare.smk, models/evaluation/compare.py; paper Tables 5-6,
Fig. 7):
the paired statistics recomputed independently, the `compare` target on a small trained run, config checks."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import REPO, planned_rules, snakemake, write_config
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from models.evaluation.compare import REFERENCE, paired_diagnosis
from models.evaluation.significance import corrected_resampled_t_test, delong_test, mcnemar_test

VARIANTS = {
    "mean_cat": {
        "label": "Mean-Cat",
        "table": "fusion",
        "subsets": ["lab+ecg", "lab+ecg+echo"],
        "tasks": None,
        "model": {"tgmm": {"fusion": "mean_cat", "guidance": "none", "response_head": "linear"}},
    },
    "no_tgm": {
        "label": "no TGM",
        "table": "ablation",
        "subsets": ["lab", "lab+ecg+echo"],
        "tasks": ["diagnosis"],
        "model": {"tgmm": {"guidance": "none"}},
    },
    "position_late": {
        "label": "C_h late",
        "table": "sweep",
        "subsets": ["lab+ecg+echo"],
        "tasks": ["diagnosis"],
        "model": {"tgmm": {"human_text_position": 8}},
    },
}


def _with_variants(workdir: Path, variants: dict) -> None:
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["compare"] = {"tasks": ["diagnosis", "prognosis"], "variants": variants}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def compared(trained_run, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("compared")
    shutil.copytree(trained_run, workdir, symlinks=True, dirs_exist_ok=True)
    _with_variants(workdir, VARIANTS)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["ptbxl"]["demo"]["n_records"] = 240  # the report's Table 4 section, kept small
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(workdir, "--cores", "2", "compare", timeout=1800)
    return workdir


def _diagnosis_frame(scores: np.ndarray, labels: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "subject_id": np.arange(labels.size),
            "split": ["test"] * labels.size,
            "label": labels,
            "score": scores,
            "pred": (scores > 0.5).astype(int),
        }
    )


# --- the statistics ------------------------------------------------------------------------------------


def test_a_model_paired_with_itself_has_no_difference_and_a_better_one_is_detected():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=120)
    noisy = np.clip(labels * 0.2 + rng.uniform(0, 0.8, size=120), 0, 1)
    sharp = np.clip(labels * 0.6 + rng.uniform(0, 0.4, size=120), 0, 1)
    weak, strong = _diagnosis_frame(noisy, labels), _diagnosis_frame(sharp, labels)
    same = {row["metric"]: row for row in paired_diagnosis(weak, weak, n_resamples=200)}
    assert same["auc"]["diff"] == 0 and same["auc"]["p_value"] == 1.0 and same["auc"]["test"] == "DeLong"
    assert same["accuracy"]["p_value"] == 1.0 and same["accuracy"]["test"] == "McNemar"
    better = {row["metric"]: row for row in paired_diagnosis(weak, strong, n_resamples=200)}
    auc = better["auc"]
    assert auc["diff"] == pytest.approx(roc_auc_score(labels, sharp) - roc_auc_score(labels, noisy))
    assert auc["diff_low"] > 0 and auc["p_value"] == pytest.approx(delong_test(labels, noisy, sharp).p_value)
    assert auc["p_value"] < 1e-6
    accuracy = better["accuracy"]
    assert accuracy["p_value"] == pytest.approx(mcnemar_test(labels, weak["pred"], strong["pred"]).p_value)


def test_a_small_difference_on_84_patients_gets_no_tiny_p_value():
    """The old Wilcoxon-over-resamples p-value of a 0.02-0.07 AUC difference on 84 patients was about 1e-150;
    DeLong's test, on the same predictions, says what the overlapping intervals say."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=84)
    common = rng.normal(size=84)
    first = labels * 1.0 + common + rng.normal(size=84)
    second = labels * 1.2 + common + rng.normal(size=84)
    rows = {r["metric"]: r for r in paired_diagnosis(_diagnosis_frame(first, labels), _diagnosis_frame(second, labels))}
    auc = rows["auc"]
    assert 0.0 < abs(auc["diff"]) < 0.1 and auc["diff_low"] < 0 < auc["diff_high"]
    assert auc["p_value"] > 0.05


def test_pairing_refuses_different_patients():
    labels = np.array([0, 1, 0, 1])
    a = _diagnosis_frame(np.array([0.1, 0.9, 0.2, 0.8]), labels)
    b = a.with_columns(pl.col("subject_id") + 100)
    with pytest.raises(ValueError, match="same test patients"):
        paired_diagnosis(a, b, n_resamples=10)


# --- the workflow ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_target_writes_every_table_with_tgmm_rows_equal_to_the_evaluation(compared):
    out = compared / "results"
    results = pl.read_parquet(out / "eval/compare.parquet")
    expected_runs = {
        ("mean_cat", task, subset) for task in ("diagnosis", "prognosis") for subset in ("lab+ecg", "lab+ecg+echo")
    } | {("no_tgm", "diagnosis", "lab"), ("no_tgm", "diagnosis", "lab+ecg+echo")}
    expected_runs |= {("position_late", "diagnosis", "lab+ecg+echo")}
    variant_rows = results.filter(pl.col("variant") != REFERENCE)
    assert set(variant_rows.select("variant", "task", "subset").iter_rows()) == expected_runs
    assert variant_rows["p_value"].null_count() == 0
    assert set(variant_rows["test"]) == {"DeLong", "McNemar", "Nadeau-Bengio"}
    # TGMM's rows come from the same predictions as eval/{task}.parquet: same point estimates.
    for task in ("diagnosis", "prognosis"):
        evaluated = pl.read_parquet(out / f"eval/{task}.parquet")
        for row in results.filter(variant=REFERENCE, task=task).iter_rows(named=True):
            value = evaluated.filter(subset=row["subset"], metric=row["metric"])["value"].item()
            assert row["value"] == pytest.approx(value), (task, row["subset"], row["metric"])
    markdown = (out / "eval/COMPARE.md").read_text()
    for heading in ("Table 5", "Table 6", "Fig. 7"):
        assert heading in markdown
    for label in ("Mean-Cat", "no TGM", "C_h late", "TGMM"):
        assert f"| {label} |" in markdown
    for table in ("fusion", "ablation", "sweep"):
        assert (out / f"eval/figures/compare_{table}.png").stat().st_size > 10_000


@pytest.mark.slow
def test_prognosis_comparison_recomputed_from_the_saved_predictions(compared):
    out = compared / "results"
    row = pl.read_parquet(out / "eval/compare.parquet").filter(
        variant="mean_cat", task="prognosis", subset="lab+ecg+echo"
    )
    frames = {
        "tgmm": pl.read_parquet(out / "eval/predictions/prognosis/lab+ecg+echo.parquet"),
        "mean_cat": pl.read_parquet(out / "eval/compare/predictions/mean_cat/prognosis/lab+ecg+echo.parquet"),
    }
    cindex = {}
    for name, frame in frames.items():
        per_fold = {}
        for (repeat, fold), part in frame.group_by(["repeat", "fold"]):
            event, time, risk = (part[c].to_numpy() for c in ("event", "time", "risk"))
            per_fold[(repeat, fold)] = concordance_index_censored(event, time, risk)[0]
        cindex[name] = per_fold
    folds = sorted(cindex["tgmm"])
    diff = np.array([cindex["mean_cat"][f] - cindex["tgmm"][f] for f in folds])
    assert row["value"].item() == pytest.approx(np.mean([cindex["mean_cat"][f] for f in folds]))
    assert row["diff"].item() == pytest.approx(diff.mean())
    # n_test / n_train of each fold: the fold's patients over the rest of its repeat
    frame = frames["mean_cat"]
    ratios = [
        part.height / (frame.filter(pl.col("repeat") == repeat).height - part.height)
        for (repeat, _), part in frame.group_by(["repeat", "fold"])
    ]
    expected = corrected_resampled_t_test(diff, float(np.mean(ratios)))
    assert row["test"].item() == "Nadeau-Bengio"
    assert row["p_value"].item() == pytest.approx(expected.p_value)
    assert (row["diff_low"].item(), row["diff_high"].item()) == pytest.approx((expected.low, expected.high))


@pytest.mark.slow
def test_editing_one_variant_reruns_only_its_jobs_and_the_tables(compared, tmp_path):
    workdir = tmp_path / "edit"
    shutil.copytree(compared, workdir, symlinks=True)
    assert planned_rules(snakemake(workdir, "-n", "--cores", "2", "compare")) == set()
    edited = {**VARIANTS, "no_tgm": {**VARIANTS["no_tgm"], "model": {"tgmm": {"guidance": "human"}}}}
    _with_variants(workdir, edited)
    proc = snakemake(workdir, "-n", "--cores", "2", "compare")
    assert planned_rules(proc) == {"train_scenario", "compare_tables", "compare"}
    counts = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("train_")}
    assert counts == {"train_scenario": 2}, counts  # no_tgm's two diagnosis subsets, nothing of the other variants
    jobs = [line for line in proc.stdout.splitlines() if line.strip().startswith("output:") and "predictions" in line]
    assert jobs and all("/no_tgm/" in line for line in jobs), jobs


@pytest.mark.parametrize(
    ("variant", "named"),
    [
        ({"model": {"tgmm": {"fusoin": "mean_cat"}}}, "fusoin"),
        ({"model": {"tgmm": {"fusion": "max"}}}, "compare.variants.bad.model"),
        ({"table": "tables"}, "tables"),
    ],
)
def test_invalid_variant_fails_before_any_job_naming_it(tmp_path, variant, named):
    bad = {"label": "bad", "table": "ablation", "subsets": None, "tasks": None, "model": {}, **variant}
    write_config(tmp_path, compare={"tasks": ["diagnosis"], "variants": {"bad": bad}})
    proc = snakemake(tmp_path, "--cores", "1", "compare", check=False)
    assert proc.returncode != 0 and named in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


# --- the HTML report ----------------------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=8000",
    "--window-size=1400,1000",
]


def report_results(report: Path) -> dict:
    """The results the Snakemake report embeds (``var results = {...};``: name, caption, labels, data URI)."""
    line = next(line for line in report.read_text().splitlines() if line.strip().startswith("var results = {"))
    return json.loads(line.strip().removeprefix("var results = ").removesuffix(";"))


def embedded_text(entry: dict) -> str:
    return base64.b64decode(entry["data_uri"].split("base64,", 1)[1]).decode()


PER_PATIENT_FIGURES = {
    "text_attributions.html", "text_attributions.png", "ecg_gradcam.png", "ecg_occlusion.png", "echo_gradcam.png",
}  # fmt: skip


@pytest.fixture(scope="module")
def report(compared) -> Path:
    snakemake(compared, "--cores", "2", "paper", timeout=1800)
    path = compared / "results/report.html"
    snakemake(compared, "--report", str(path), "paper", timeout=600)
    return path


@pytest.mark.slow
def test_report_holds_every_section_with_a_caption(report, compared):
    results = report_results(report)
    names = {Path(name).name for name in results}
    expected = {
        "attrition_flow.png", "non_missing_rate.png", "history_by_cohort.png", "RESULTS.html", "roc_diagnosis.png",
        "km_lab+ecg+echo.png", "COMPARE.html", "compare_fusion.png", "compare_ablation.png", "compare_sweep.png",
        "TABLE4.html", "roc.png", "attention_diagnosis.png", "ecg_waves.png",
    }  # fmt: skip
    assert expected <= names, expected - names
    for name, entry in results.items():
        assert len(entry["caption"]) > 80, f"{name} has no real caption"
    tables = {Path(name).name: embedded_text(entry) for name, entry in results.items() if name.endswith(".html")}
    assert "Table 2" in tables["RESULTS.html"] and "Table 3" in tables["RESULTS.html"]
    assert "Table 5" in tables["COMPARE.html"] and "Table 6" in tables["COMPARE.html"]
    assert "<table>" in tables["COMPARE.html"] and "Mean-Cat" in tables["COMPARE.html"]
    assert "Table 4" in tables["TABLE4.html"] and "<table>" in tables["TABLE4.html"]
    description = report.read_text()
    assert "HFTri-MIMIC and TGMM" in description


@pytest.mark.slow
def test_the_default_report_shows_no_single_patient(report, compared):
    """privacy.report_per_patient is false by default: the explanation figures of single test patients (their lab
    text, ECG traces, echo frames) are written under results/eval/explain/ but not embedded, and the report says
    what it holds; the switch puts them in, and the report then says it must not be shared."""
    results = report_results(report)
    assert not PER_PATIENT_FIGURES & {Path(name).name for name in results}
    for name in PER_PATIENT_FIGURES:
        assert (compared / "results/eval/explain" / name).is_file(), name  # written, only not embedded
    page = report.read_text()
    assert "no figure or page shows a single patient" in page
    patients = {str(s) for s in pl.read_parquet(compared / "results/cohort/cohort.parquet")["subject_id"].to_list()}
    embedded = " ".join(embedded_text(e) for n, e in results.items() if n.endswith((".html", ".md")))
    assert not {word for word in re.findall(r"\d{8}", embedded) if word in patients}

    with_patients = compared / "results/report_per_patient.html"
    # The switch as a config overlay (--config parses a nested mapping's values as strings); the second --configfile
    # replaces the helper's list, so it names both files, and comes last: it takes every following word as a file.
    overlay = compared / "per_patient.yaml"
    overlay.write_text(yaml.safe_dump({"privacy": {"report_per_patient": True}}))
    configs = [str(compared / "config.yaml"), str(overlay)]
    snakemake(compared, "--report", str(with_patients), "paper", "--configfile", *configs, timeout=600)
    names = {Path(name).name for name in report_results(with_patients)}
    assert names >= PER_PATIENT_FIGURES, PER_PATIENT_FIGURES - names
    assert "do not share it" in with_patients.read_text()


@pytest.mark.slow
def test_report_opens_in_headless_chromium_without_errors(report, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (.ci/run installs it)"
    artefacts = Path(os.environ.get("HFTRI_TEST_ARTIFACTS", REPO / "test-artifacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    screenshot = artefacts / "report_first_page.png"
    screenshot.unlink(missing_ok=True)
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    shot = subprocess.run(
        [chromium, *flags, f"--screenshot={screenshot}", report.as_uri()], capture_output=True, text=True, timeout=180
    )
    dom = subprocess.run([chromium, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=180)
    for proc in (shot, dom):
        assert proc.returncode == 0, proc.stderr[-2000:]
        console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
        assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    assert screenshot.stat().st_size > 10_000
    # the report's script ran: its navigation lists the result categories
    categories = (
        "Cohort and dataset",
        "TGMM results",
        "Baselines and ablations",
        "Explanations",
        "External validation",
    )
    for category in categories:
        assert category in dom.stdout, category
