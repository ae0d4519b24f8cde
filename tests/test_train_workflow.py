"""Training and evaluation rules (workflow/rules/train.smk, evaluate.smk; docs/MODEL.md) on a small demo run through
`all`: outputs and their columns, metrics recomputed with scikit-learn / scikit-survival from the saved
predictions, same-seed determinism, reruns after config edits, resumption after a kill, config checks."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from conftest import REPO, planned_rules, snakemake, snakemake_command, write_config
from sklearn.metrics import accuracy_score, label_ranking_average_precision_score, roc_auc_score
from sklearn.metrics.pairwise import cosine_similarity
from sksurv.metrics import concordance_index_censored

from models.config import DIRECTIONS, SUBSETS, TGMMConfig, direction_name
from models.encoders.ecg import STMEMConfig
from models.encoders.echo import EchoEncoderConfig
from models.encoders.text import TextEncoderConfig
from models.training.experiment import Experiment, run_diagnosis
from models.training.loop import TrainConfig


@pytest.fixture(scope="module")
def out(trained_run) -> Path:
    return trained_run / "results"


def test_all_writes_every_result_table_prediction_and_figure(out):
    for task in ("diagnosis", "prognosis", "retrieval"):
        frame = pl.read_parquet(out / f"eval/{task}.parquet")
        assert frame.columns == ["subset", "metric", "value", "ci_low", "ci_high", "sd", "n", "n_skipped"]
    diagnosis = pl.read_parquet(out / "eval/diagnosis.parquet")
    assert set(diagnosis["subset"]) == set(SUBSETS) and set(diagnosis["metric"]) == {"auc", "accuracy"}
    assert (diagnosis["ci_low"] <= diagnosis["value"]).all() and (diagnosis["value"] <= diagnosis["ci_high"]).all()
    prognosis = pl.read_parquet(out / "eval/prognosis.parquet")
    assert set(prognosis["subset"]) == set(SUBSETS) and prognosis["sd"].is_not_null().all()
    retrieval = pl.read_parquet(out / "eval/retrieval.parquet")
    assert set(retrieval["subset"]) == {direction_name(q, c) for q, c in DIRECTIONS}
    for subset in SUBSETS:
        assert (out / f"eval/predictions/diagnosis/{subset}.parquet").is_file()
        assert (out / f"eval/predictions/prognosis/{subset}.parquet").is_file()
        assert (out / f"eval/figures/km_{subset}.png").stat().st_size > 10_000
    assert (out / "eval/figures/roc_diagnosis.png").stat().st_size > 10_000
    tables = (out / "eval/RESULTS.md").read_text()
    assert "Table 2" in tables and "Table 3" in tables and tables.count("| ✓ |") >= 4
    assert "Table 3b: cross-modal retrieval among 3 candidates" in tables
    for subset in ("lab", "ecg+echo"):  # benchmarks and logs for every job
        assert (out / f"benchmarks/train/diagnosis/{subset}.tsv").is_file()
        assert (out / f"logs/train/prognosis/{subset}.log").is_file()


def test_diagnosis_metrics_agree_with_scikit_learn(out):
    results = pl.read_parquet(out / "eval/diagnosis.parquet")
    for subset in SUBSETS:
        predictions = pl.read_parquet(out / f"eval/predictions/diagnosis/{subset}.parquet")
        assert set(predictions["split"]) == {"train", "val", "test"}
        test = predictions.filter(split="test")
        row = {r["metric"]: r for r in results.filter(subset=subset).iter_rows(named=True)}
        assert row["auc"]["value"] == pytest.approx(roc_auc_score(test["label"], test["score"]), abs=1e-12)
        assert row["accuracy"]["value"] == pytest.approx(accuracy_score(test["label"], test["pred"]), abs=1e-12)
        assert row["auc"]["n"] == test.height


def test_prognosis_cindex_agrees_with_scikit_survival(out):
    results = pl.read_parquet(out / "eval/prognosis.parquet")
    splits = pl.read_parquet(out / "hftri/splits.parquet").filter(task="prognosis", split="test")
    for subset in SUBSETS:
        predictions = pl.read_parquet(out / f"eval/predictions/prognosis/{subset}.parquet")
        # every (repeat, fold) predicts exactly its test patients
        key = ["subject_id", "repeat", "fold"]
        assert predictions.select(key).sort(key).equals(splits.select(key).sort(key))
        values = []
        for (_, _), part in predictions.group_by(["repeat", "fold"]):
            event = part["event"].to_numpy()
            if event.any():
                values.append(concordance_index_censored(event, part["time"].to_numpy(), part["risk"].to_numpy())[0])
        row = results.filter(subset=subset).row(0, named=True)
        assert row["value"] == pytest.approx(np.mean(values), abs=1e-12)
        assert row["sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert row["n"] == len(values)


def test_retrieval_metrics_agree_with_scikit_learn_on_the_saved_embeddings(out):
    embeddings = pl.read_parquet(out / "train/retrieval/embeddings.parquet")
    results = pl.read_parquet(out / "eval/retrieval.parquet")
    for query, candidate in DIRECTIONS:
        name = direction_name(query, candidate)
        have_both = pl.col(f"emb_{query}").is_not_null() & pl.col(f"emb_{candidate}").is_not_null()
        both = embeddings.filter((pl.col("split") == "test") & have_both).sort("subject_id")
        similarity = cosine_similarity(
            np.array(both[f"emb_{query}"].to_list()), np.array(both[f"emb_{candidate}"].to_list())
        )
        expected = label_ranking_average_precision_score(np.eye(len(both), dtype=bool), similarity)
        row = {r["metric"]: r for r in results.filter(subset=name).iter_rows(named=True)}
        assert row["lrap"]["value"] == pytest.approx(expected, abs=1e-9), name
        ranks = pl.read_parquet(out / f"eval/predictions/retrieval/{name}.parquet")["rank"].to_numpy()
        assert row["recall@1"]["value"] == pytest.approx(np.mean(ranks <= 1))
        assert row["recall@2"]["value"] == pytest.approx(np.mean(ranks <= 2))
        assert row["lrap"]["n"] == len(both)


def test_retrieval_among_k_candidates_agrees_with_scikit_learn_and_the_pool(out):
    """Table 3b: the candidate-set metrics of every direction are computed on the same queries as the full-pool
    ranking; with k = 3 chance is LRAP 0.611 and Recall@1 1/3, and the values are LRAP of sklearn on those sets."""
    from models.evaluation.metrics import direction_similarities, draw_distractors

    config = yaml.safe_load((out.parent / "config.yaml").read_text())["evaluate"]
    k, draws, seed = config["retrieval_candidates"], config["retrieval_candidate_draws"], config["seed"]
    candidates = pl.read_parquet(out / "eval/retrieval_candidates.parquet")
    full = pl.read_parquet(out / "eval/retrieval.parquet")
    assert set(candidates["subset"]) == set(full["subset"]) and (candidates["k"] == k).all()
    similarities = direction_similarities(pl.read_parquet(out / "train/retrieval/embeddings.parquet"))
    for name, (similarity, _) in similarities.items():
        n = similarity.shape[0]
        picks = draw_distractors(n, similarity.shape[1], k, draws, seed)
        scores = np.concatenate(
            [np.concatenate([np.diagonal(similarity)[:, None], similarity[np.arange(n)[:, None], p]], 1) for p in picks]
        )
        labels = np.zeros_like(scores, dtype=bool)
        labels[:, 0] = True
        row = {r["metric"]: r for r in candidates.filter(subset=name).iter_rows(named=True)}
        assert row["lrap"]["value"] == pytest.approx(label_ranking_average_precision_score(labels, scores), abs=1e-9)
        assert row["lrap"]["chance"] == pytest.approx(11 / 18) and row["recall@1"]["chance"] == pytest.approx(1 / 3)
        assert row["lrap"]["n"] == full.filter(subset=name, metric="lrap")["n"][0]


def _experiment(out: Path, work_dir: Path) -> Experiment:
    config = yaml.safe_load((out.parent / "config.yaml").read_text())
    model = config["model"]
    model["text"]["vocab"] = str(out / "text/tokenizer")
    optim = {**config["train"]["optim"], "progress": False}
    return Experiment.from_settings(out, model, optim, work_dir, threads=1, features_path=out / "train/features.pt")


def test_same_seed_gives_the_same_predictions_as_the_workflow(out, tmp_path):
    torch.set_num_threads(1)
    predictions, _ = run_diagnosis(_experiment(out, tmp_path / "a"), "lab+ecg+echo")
    saved = pl.read_parquet(out / "eval/predictions/diagnosis/lab+ecg+echo.parquet")
    assert predictions.sort("subject_id").equals(saved.sort("subject_id"))


def test_changing_evaluation_or_training_config_reruns_only_what_depends_on_it(trained_run, tmp_path):
    def plan(section: str, change: dict) -> set[str]:
        workdir = tmp_path / f"plan{len(list(tmp_path.iterdir()))}"
        shutil.copytree(trained_run, workdir, symlinks=True)
        config = yaml.safe_load((workdir / "config.yaml").read_text())
        config[section] = {**config[section], **change}
        (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return planned_rules(snakemake(workdir, "-n", "--cores", "2", "all"))

    assert plan("evaluate", {}) == set()
    assert plan("evaluate", {"seed": 1}) == {
        "evaluate_diagnosis", "evaluate_retrieval", "results_tables", "all"
    }  # fmt: skip
    assert plan("evaluate", {"km_threshold": 0.6}) == {"evaluate_prognosis", "results_tables", "all"}
    assert plan("evaluate", {"retrieval_candidates": 5}) == {"evaluate_retrieval", "results_tables", "all"}
    optim = yaml.safe_load((trained_run / "config.yaml").read_text())["train"]
    optim = {"optim": {**optim["optim"], "lr": 0.001}}
    assert plan("train", optim) == {
        "train_model", "train_retrieval", "evaluate_diagnosis", "evaluate_prognosis", "evaluate_retrieval",
        "results_tables", "explain", "all",
    }  # fmt: skip


@pytest.mark.slow
def test_training_killed_midway_resumes_to_the_uninterrupted_results(trained_run, tmp_path):
    """SIGKILL `snakemake all` while prognosis folds are training, rerun: the same predictions and tables."""
    workdir = tmp_path / "run"
    shutil.copytree(trained_run, workdir, symlinks=True)
    shutil.rmtree(workdir / "results/train")
    shutil.rmtree(workdir / "results/eval")
    marker = workdir / "results/train/prognosis/lab+ecg+echo/repeat1_fold0/last.pt"
    proc = subprocess.Popen(
        snakemake_command(workdir, "--cores", "2", "all"),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 1200
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists() and proc.poll() is None, "the kill must hit a running training job"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", "--rerun-incomplete", "all", timeout=1800)
    for path in sorted((trained_run / "results/eval").rglob("*.parquet")):
        rel = path.relative_to(trained_run)
        assert pl.read_parquet(workdir / rel).equals(pl.read_parquet(path)), f"{rel} differs after resume"
    assert (workdir / "results/eval/RESULTS.md").read_text() == (trained_run / "results/eval/RESULTS.md").read_text()


@pytest.mark.parametrize(
    ("section", "bad", "named"),
    [
        ("model", {"echo": {"arch": "mvit_small", "size": 96, "proj_dim": 64}}, "model.echo.size"),
        ("model", {"ecg": {"widht": 64}}, "widht"),
        ("train", {"subsets": ["lab", "lab+ekg"]}, "lab+ekg"),
        ("evaluate", {"bootstrap_resamples": 100}, "bootstrap_resamples"),
    ],
)
def test_invalid_model_or_training_config_fails_before_any_job(tmp_path, section, bad, named):
    write_config(tmp_path, **{section: bad})
    proc = snakemake(tmp_path, "--cores", "1", "all", check=False)
    assert proc.returncode != 0
    assert named in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("block", "cls"),
    [
        ("text", TextEncoderConfig),
        ("ecg", STMEMConfig),
        ("echo", EchoEncoderConfig),
        ("tgmm", TGMMConfig),
    ],
)
def test_config_schema_lists_exactly_the_dataclass_fields(block, cls):
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    listed = set(schema["properties"]["model"]["properties"][block]["properties"])
    assert listed == {f.name for f in dataclasses.fields(cls)}
    optim = set(schema["properties"]["train"]["properties"]["optim"]["properties"])
    assert optim == {f.name for f in dataclasses.fields(TrainConfig)}
