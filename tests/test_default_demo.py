"""The training/evaluation checks on the default demo: `snakemake all` with the repository's config.yaml, unchanged
(curation, 14 training jobs, evaluation; about 13 minutes on 2 cores), read back from the workflow's own outputs,
and the planted-signal check of its explanations (about 4 more minutes: 11 models x 2 tasks, ~90 patients each).

The demo plants heart-failure signal partially in each modality (hftri_mimic/demo/population.py): every modality
alone is informative but far from perfect. The checks below are what the planted signal must show through the whole
pipeline (raw files -> cohort -> dataset -> frozen encoders -> TGMM), and that this run reproduces the README's numbers.
Whether the three together are measurably better than the best one is issue #25's (not yet shown on this demo).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO, snakemake

UNIMODAL = ("lab", "ecg", "echo")
TRIMODAL = "lab+ecg+echo"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("default_demo")
    shutil.copyfile(REPO / "config.yaml", workdir / "config.yaml")  # byte for byte: the shipped defaults
    snakemake(workdir, "--cores", "2", "all", timeout=2700)
    yield workdir / "results"
    # ~3.6 GB of raw demo files and their curated arrays, freed as soon as this module is done rather than at the
    # session's end, so the suite's disk peak stays at one large run; evaluation tables and logs are kept.
    for heavy in ("source", "ecg", "echo"):
        shutil.rmtree(workdir / "results" / heavy, ignore_errors=True)


def metric(table: pl.DataFrame, subset: str, name: str) -> float:
    return table.filter(subset=subset, metric=name)["value"].item()


@pytest.mark.slow
def test_each_modality_alone_is_partly_informative_and_trimodal_diagnosis_is_not_below_any(default_run):
    """Every single modality carries part of the planted signal (AUC 0.6-0.9), and the trimodal model is not
    significantly below any of them: the upper end of the paired bootstrap interval of AUC(all three) - AUC(one) is
    above zero for each. This used to assert trimodal > max(single), a coin flip on 84 test patients: in the locked
    environment all three give 0.818 against lab's 0.819, with the paired interval of the difference -0.11..+0.11.
    A fusion gain larger than seed noise needs a demo whose complementarity is measurable (issue #25)."""
    from models.evaluation.compare import paired_diagnosis

    diagnosis = pl.read_parquet(default_run / "eval/diagnosis.parquet")
    unimodal = {subset: metric(diagnosis, subset, "auc") for subset in UNIMODAL}
    assert all(0.6 <= auc <= 0.9 for auc in unimodal.values()), unimodal
    assert 0.6 <= metric(diagnosis, TRIMODAL, "auc") <= 1.0
    predictions = default_run / "eval/predictions/diagnosis"
    trimodal = pl.read_parquet(predictions / f"{TRIMODAL}.parquet")
    for subset in UNIMODAL:
        single = pl.read_parquet(predictions / f"{subset}.parquet")
        auc = next(row for row in paired_diagnosis(single, trimodal) if row["metric"] == "auc")
        assert auc["n"] >= 80 and auc["diff_high"] > 0, (subset, auc)


@pytest.mark.slow
def test_the_readme_numbers_are_this_runs(default_run):
    """Reproducible from a fresh install: this run (the tests' own environment, installed from the lock) writes
    exactly the README's result block, digit for digit, lock SHA-256 and package versions included."""
    from models.evaluation.readme_results import results_block

    readme = (REPO / "README.md").read_text()
    published = readme.split("<!-- results:begin -->\n")[1].split("\n<!-- results:end -->")[0]
    assert results_block(default_run) == published


@pytest.mark.slow
def test_trimodal_accuracy_beats_the_majority_class(default_run):
    """The decision threshold (chosen on the validation split) makes accuracy meaningful: better than always
    answering the test split's most frequent class."""
    diagnosis = pl.read_parquet(default_run / "eval/diagnosis.parquet")
    test = pl.read_parquet(default_run / f"eval/predictions/diagnosis/{TRIMODAL}.parquet").filter(split="test")
    majority = max(test["label"].mean(), 1 - test["label"].mean())
    assert metric(diagnosis, TRIMODAL, "accuracy") > majority


@pytest.mark.slow
def test_results_tables_show_the_runs(default_run):
    text = (default_run / "eval/RESULTS.md").read_text()
    assert "Table 2" in text and "Table 3" in text
    assert (default_run / "eval/figures/roc_diagnosis.png").stat().st_size > 10_000


@pytest.mark.slow
def test_every_excluded_patient_has_exactly_one_first_reason(default_run):
    status = pl.read_parquet(default_run / "cohort/patient_status.parquet")
    assert status["subject_id"].is_unique().all()
    excluded = status.filter(~pl.col("in_dataset"))
    assert excluded["reason_id"].null_count() == 0 and excluded["reason"].null_count() == 0
    attrition = pl.read_parquet(default_run / "hftri/attrition.parquet")
    assert excluded.height == attrition["n_subjects"][0] - attrition["n_subjects"][-1]
    assert set(status.filter("in_dataset")["subject_id"]) == set(
        pl.read_parquet(default_run / "hftri/manifest.parquet")["subject_id"]
    )
    assert {"cohort", "ECG", "Echo study"} <= set(excluded["stage"]), "the default demo excludes at every stage"


@pytest.mark.slow
def test_training_and_evaluation_logs_name_no_patient(default_run):
    """docs/SECURITY.md on the full run: the training, evaluation and curation logs never name a cohort patient,
    admission or study."""
    cohort = pl.read_parquet(default_run / "cohort/cohort.parquet")
    columns = ("subject_id", "hadm_id", "ecg_study_id", "echo_study_id")
    ids = {str(value) for column in columns for value in cohort[column].drop_nulls().to_list()}
    logs = list((default_run / "logs").rglob("*.log")) + list((default_run.parent / ".snakemake/log").glob("*.log"))
    assert any("train" in str(log) for log in logs) and any("eval" in str(log) for log in logs)
    for log in logs:
        leaked = set(re.findall(r"\d{8}", log.read_text(errors="ignore"))) & ids
        assert not leaked, f"{log.name} names {len(leaked)} cohort patients, admissions or studies"


@pytest.mark.slow
def test_trimodal_prognosis_c_index_is_above_0_6(default_run):
    """Issue #7's prognosis check, from the workflow's own table, and that table's C-index recomputed with
    scikit-survival on the saved per-patient risks of every (repeat, fold) test set."""
    from sksurv.metrics import concordance_index_censored

    prognosis = pl.read_parquet(default_run / "eval/prognosis.parquet")
    c_index = metric(prognosis, TRIMODAL, "c_index")
    assert c_index > 0.6, c_index
    predictions = pl.read_parquet(default_run / f"eval/predictions/prognosis/{TRIMODAL}.parquet")
    per_fold = [
        concordance_index_censored(fold["event"].to_numpy(), fold["time"].to_numpy(), fold["risk"].to_numpy())[0]
        for _, fold in predictions.group_by("repeat", "fold")
    ]
    assert len(per_fold) == 10
    assert abs(sum(per_fold) / len(per_fold) - c_index) < 1e-9


# ------------------------------------------------------------- do the explanations find the planted signal?
# hftri_mimic/tools/planted_check.py: the trained trimodal model against 10 untrained controls (same frozen encoders
# and feature
# statistics, projections and TGMM at their random initialisation), on every test patient with all three
# modalities. An untrained model already leans towards large deflections and long sentences, so the trained one
# must beat every control, not just 1.

CONTROL_SEEDS = tuple(range(10))


@pytest.fixture(scope="module")
def planted(default_run) -> dict[str, list[dict]]:
    from hftri_mimic.tools.planted_check import planted_measures

    return {
        # The lab text is checked where the model learned from it: alone it has prognosis C-index ~0.48 here.
        "diagnosis": planted_measures(default_run.parent, "diagnosis", seeds=CONTROL_SEEDS),
        "prognosis": planted_measures(default_run.parent, "prognosis", seeds=CONTROL_SEEDS, measures=("ecg",)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("task", ["diagnosis", "prognosis"])
def test_ecg_explanations_put_more_attribution_on_the_planted_qrs_and_t_waves(planted, task):
    """Erasing the QRS complexes or the T waves (planted: QRS width, T amplitude) moves the trained model's score more,
    relative to erasing the P waves (nothing planted), than it moves any untrained control's."""
    trained, *controls = planted[task]
    assert trained["model"] == "trained" and trained["n_ecg"] >= 60, "too few records delineated"
    control_ratios = [c["ecg_waves"] for c in controls]
    assert trained["ecg_waves"] > 1.0
    assert trained["ecg_waves"] > max(control_ratios), (trained["ecg_waves"], control_ratios)


@pytest.mark.slow
def test_lab_text_explanations_put_more_attribution_on_the_planted_sentences(planted):
    """Masking a planted sentence (NT-proBNP and the other labs the lab component shifts, medical and drug history)
    moves the trained diagnosis model's score more than masking an unplanted one (labs with no weight, gender, race,
    height, weight, BMI), and by more than for any untrained control. The history sentences carry this: over the
    lab sentences alone the trained model is below the controls (models/README.md), which is not asserted."""
    trained, *controls = planted["diagnosis"]
    assert trained["n_text"] >= 60
    control_ratios = [c["lab_text"] for c in controls]
    assert trained["lab_text"] > 1.0
    assert trained["lab_text"] > max(control_ratios), (trained["lab_text"], control_ratios)
