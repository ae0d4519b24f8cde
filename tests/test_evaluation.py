"""Evaluation (paper §5.1-5.2, docs/MODEL.md): metrics agree with scikit-learn / scikit-survival called directly on
the saved predictions; bootstrap CIs, KM/log-rank on scikit-survival's real WHAS500 data, retrieval, tables,
figures."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import (
    accuracy_score,
    label_ranking_average_precision_score,
    roc_auc_score,
    top_k_accuracy_score,
)
from sksurv.compare import compare_survival
from sksurv.datasets import load_whas500
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from models.config import SUBSETS
from models.evaluation.metrics import (
    DIRECTIONS,
    PREDICTION_COLUMNS,
    RESULT_COLUMNS,
    bootstrap_ci,
    candidate_set_metrics,
    candidate_set_ranks,
    diagnosis_metrics,
    direction_name,
    direction_similarities,
    draw_distractors,
    km_groups,
    plot_km,
    plot_roc,
    predictions_path,
    prognosis_fold_frame,
    prognosis_metrics,
    results_frame,
    retrieval_directions,
    retrieval_metrics,
    retrieval_predictions,
    risk_groups,
    table2_markdown,
    table3_markdown,
    true_match_ranks,
    write_predictions,
    write_results,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def diagnosis_frame(n: int = 300, seed: int = 0, shift: float = 1.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    score = rng.normal(size=n) + shift * label
    return pl.DataFrame(
        {
            "subject_id": np.arange(10_000, 10_000 + n),
            "split": ["test"] * n,
            "label": label,
            "score": score,
            "pred": (score > shift / 2).astype(int),
        }
    )


@pytest.fixture(scope="module")
def whas500() -> pl.DataFrame:
    """scikit-survival's bundled WHAS500 (real patients) as a prognosis prediction frame: risk = age,
    five repeats of a random two-fold split like §5.1's 5 × 2 cross-validation."""
    x, y = load_whas500()
    n = len(y)
    rng = np.random.default_rng(7)
    parts = []
    for repeat in range(5):
        fold = np.zeros(n, dtype=int)
        fold[rng.permutation(n)[: n // 2]] = 1
        parts.append(
            pl.DataFrame(
                {
                    "subject_id": np.arange(n),
                    "repeat": np.full(n, repeat),
                    "fold": fold,
                    "time": y["lenfol"],
                    "event": y["fstat"],
                    "risk": x["age"].to_numpy(dtype=float),
                }
            )
        )
    return pl.concat(parts)


# --- diagnosis --------------------------------------------------------------------------------------


def test_diagnosis_metrics_match_sklearn_on_saved_predictions(tmp_path):
    frame = diagnosis_frame()
    path = write_predictions(frame, tmp_path, "diagnosis", "lab+ecg+echo")
    assert path == predictions_path(tmp_path, "diagnosis", "lab+ecg+echo")
    assert path == tmp_path / "eval/predictions/diagnosis/lab+ecg+echo.parquet"
    saved = pl.read_parquet(path)
    assert saved.columns == list(PREDICTION_COLUMNS["diagnosis"])

    rows = {r["metric"]: r for r in diagnosis_metrics(saved, n_resamples=1000, seed=1)}
    label, score, pred = (saved[c].to_numpy() for c in ("label", "score", "pred"))
    assert rows["auc"]["value"] == pytest.approx(roc_auc_score(label, score), abs=1e-12)
    assert rows["accuracy"]["value"] == pytest.approx(accuracy_score(label, pred), abs=1e-12)
    for row in rows.values():
        assert row["ci_low"] < row["value"] < row["ci_high"]
        assert row["n"] == 300 and row["n_skipped"] == 0
        assert row["ci_high"] - row["ci_low"] < 0.2

    again = diagnosis_metrics(saved, n_resamples=1000, seed=1)
    other = diagnosis_metrics(saved, n_resamples=1000, seed=2)
    assert again == list(rows.values())
    assert [(r["ci_low"], r["ci_high"]) for r in other] != [(r["ci_low"], r["ci_high"]) for r in again]
    assert [r["value"] for r in other] == [r["value"] for r in again]


def test_diagnosis_ignores_other_splits():
    frame = pl.concat([diagnosis_frame(100), diagnosis_frame(50, seed=3).with_columns(split=pl.lit("val"))])
    rows = {r["metric"]: r for r in diagnosis_metrics(frame, n_resamples=50, seed=0)}
    test = frame.filter(pl.col("split") == "test")
    assert rows["auc"]["value"] == pytest.approx(roc_auc_score(test["label"], test["score"]))
    assert rows["auc"]["n"] == 100


def test_bootstrap_skips_undefined_resamples():
    # 6 patients, one positive: about (5/6)^6 ≈ 33% of resamples hold no positive, where the AUC is undefined.
    label = np.array([1, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.1, 0.95, 0.3, 0.2, 0.4])
    ci = bootstrap_ci(roc_auc_score, label, score, n_resamples=1000, seed=0)
    value, low, high = ci
    assert value == pytest.approx(roc_auc_score(label, score))
    assert 200 < ci.n_skipped < 500
    assert ci.n_resamples == 1000 and ci.n == 6
    assert 0 <= low <= value <= high <= 1

    frame = pl.DataFrame(
        {"subject_id": range(6), "split": ["test"] * 6, "label": label, "score": score, "pred": (score > 0.5) * 1}
    )
    rows = {r["metric"]: r for r in diagnosis_metrics(frame, n_resamples=300, seed=0)}
    assert rows["auc"]["n_skipped"] > 0 and rows["accuracy"]["n_skipped"] == 0

    never = bootstrap_ci(roc_auc_score, np.zeros(4), np.arange(4.0), n_resamples=20, seed=0)
    assert never.n_skipped == 20 and np.isnan(never.value) and np.isnan(never.low)


def test_bootstrap_matches_manual_percentile():
    x = np.random.default_rng(3).normal(size=50)
    value, low, high = bootstrap_ci(np.mean, x, n_resamples=200, seed=11, alpha=0.1)
    rng = np.random.default_rng(11)
    means = [x[rng.integers(0, 50, size=50)].mean() for _ in range(200)]
    assert value == pytest.approx(x.mean())
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])))


# --- prognosis --------------------------------------------------------------------------------------


def test_c_index_per_fold_matches_sksurv(whas500, tmp_path):
    saved = pl.read_parquet(write_predictions(whas500, tmp_path, "prognosis", "lab+ecg+echo"))
    folds = prognosis_fold_frame(saved)
    assert folds.height == 10
    for row in folds.iter_rows(named=True):
        part = saved.filter((pl.col("repeat") == row["repeat"]) & (pl.col("fold") == row["fold"]))
        direct = concordance_index_censored(part["event"].to_numpy(), part["time"].to_numpy(), part["risk"].to_numpy())
        assert row["c_index"] == pytest.approx(direct[0], abs=1e-12)
        assert row["n"] == part.height and row["n_events"] == part["event"].sum()

    (row,) = prognosis_metrics(saved)
    per_fold = folds["c_index"].to_numpy()
    assert row["metric"] == "c_index" and row["n"] == 10
    assert row["per_fold"] == pytest.approx(per_fold.tolist())
    assert row["value"] == pytest.approx(np.mean(per_fold))
    assert row["sd"] == pytest.approx(np.std(per_fold, ddof=1))
    # Age is a known strong predictor of mortality after MI: the C-index on the whole cohort matches sksurv's.
    x, y = load_whas500()
    whole = concordance_index_censored(y["fstat"], y["lenfol"], x["age"].to_numpy(dtype=float))[0]
    assert 0.65 < whole < 0.75
    (all_in_one,) = prognosis_metrics(saved.filter(pl.col("repeat") == 0).with_columns(fold=pl.lit(0)))
    assert all_in_one["value"] == pytest.approx(whole, abs=1e-12) and np.isnan(all_in_one["sd"])
    assert abs(row["value"] - whole) < 0.03


def test_fold_without_events_is_left_out(whas500):
    frame = whas500.filter(pl.col("repeat") == 0)
    extra = frame.head(20).with_columns(
        repeat=pl.lit(9, dtype=pl.Int64), fold=pl.lit(0, dtype=pl.Int64), event=pl.lit(False)
    )
    folds = prognosis_fold_frame(pl.concat([frame, extra]))
    assert folds.filter(pl.col("repeat") == 9)["c_index"].null_count() == 1
    assert prognosis_metrics(pl.concat([frame, extra]))[0]["n"] == 2


def test_km_groups_and_logrank_on_whas500(whas500, tmp_path):
    groups, p = km_groups(whas500)
    high, low = groups["high"], groups["low"]
    assert high.n + low.n == 500  # repeat 0: every patient once
    assert high.survival_at(365) < low.survival_at(365) - 0.1
    assert high.survival_at(0) == 1.0
    assert np.all(high.ci_low <= high.survival + 1e-12) and np.all(high.survival <= high.ci_high + 1e-12)

    assigned = risk_groups(whas500)
    direct = compare_survival(
        Surv.from_arrays(event=assigned["event"].to_numpy(), time=assigned["time"].to_numpy()),
        assigned["group"].to_numpy(),
    )
    assert p == pytest.approx(direct[1], rel=1e-12)
    assert p < 0.05
    # per-fold median split: within each fold, high = risk above that fold's median
    for _, part in assigned.group_by(["repeat", "fold"]):
        median = np.median(part["risk"].to_numpy())
        assert (part.filter(pl.col("group") == "high")["risk"] > median).all()
        assert (part.filter(pl.col("group") == "low")["risk"] <= median).all()
    assert risk_groups(whas500, repeat=None).height == 2500

    path = plot_km(groups, p, tmp_path / "figs/km.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


# --- retrieval --------------------------------------------------------------------------------------


def test_retrieval_identity_and_random(tmp_path):
    n = 200
    rng = np.random.default_rng(0)
    identity = np.eye(n) + 0.01 * rng.random((n, n))
    rows = {r["metric"]: r for r in retrieval_metrics(identity, n_resamples=200, seed=0)}
    assert rows["recall@1"]["value"] == 1.0 and rows["recall@2"]["value"] == 1.0
    assert rows["lrap"]["value"] == pytest.approx(1.0)

    sims = rng.normal(size=(n, n))
    rows = {r["metric"]: r for r in retrieval_metrics(sims, n_resamples=500, seed=0)}
    labels = np.eye(n, dtype=bool)
    assert rows["lrap"]["value"] == pytest.approx(label_ranking_average_precision_score(labels, sims), abs=1e-12)
    for k in (1, 2):
        direct = top_k_accuracy_score(np.arange(n), sims, k=k, labels=np.arange(n))
        assert rows[f"recall@{k}"]["value"] == pytest.approx(direct, abs=1e-12)
    assert rows["recall@1"]["value"] < 0.05  # ≈ 1/n
    for row in rows.values():
        assert row["ci_low"] <= row["value"] <= row["ci_high"]

    # many random directions: mean Recall@1 ≈ 1/n
    r1 = [retrieval_metrics(rng.normal(size=(50, 50)), n_resamples=1)[1]["value"] for _ in range(200)]
    assert np.mean(r1) == pytest.approx(1 / 50, abs=0.01)

    # saved per-query predictions reproduce the metrics: LRAP = mean(1 / rank), Recall@k = mean(rank <= k)
    name = direction_name("lab", "echo")
    saved = pl.read_parquet(write_predictions(retrieval_predictions(sims, np.arange(n)), tmp_path, "retrieval", name))
    assert saved.columns == list(PREDICTION_COLUMNS["retrieval"])
    ranks = saved["rank"].to_numpy()
    assert np.mean(1 / ranks) == pytest.approx(rows["lrap"]["value"], abs=1e-12)
    assert np.mean(ranks <= 2) == pytest.approx(rows["recall@2"]["value"])


def test_ties_count_against_the_query():
    sims = np.ones((4, 4))
    rows = {r["metric"]: r["value"] for r in retrieval_metrics(sims, n_resamples=10)}
    assert rows["lrap"] == pytest.approx(label_ranking_average_precision_score(np.eye(4, dtype=bool), sims))
    assert rows["recall@1"] == 0.0


def test_six_directions_from_three_embeddings():
    rng = np.random.default_rng(1)
    shared = rng.normal(size=(30, 8))
    emb = {m: shared + 0.1 * rng.normal(size=(30, 8)) for m in ("lab", "ecg", "echo")}
    sims = retrieval_directions(emb)
    assert list(sims) == list(DIRECTIONS) and len(sims) == 6
    for (q, c), s in sims.items():
        assert s.shape == (30, 30)
        unit_q = emb[q] / np.linalg.norm(emb[q], axis=1, keepdims=True)
        unit_c = emb[c] / np.linalg.norm(emb[c], axis=1, keepdims=True)
        np.testing.assert_allclose(s, unit_q @ unit_c.T, atol=1e-12)
        np.testing.assert_allclose(sims[(c, q)], s.T, atol=1e-12)
        assert retrieval_metrics(s, n_resamples=10)[1]["value"] > 0.9  # aligned embeddings retrieve

    is_query = np.zeros(30, dtype=bool)
    is_query[[3, 5, 7, 20]] = True
    test_pool = retrieval_directions(emb, is_query=is_query)
    all_pool = retrieval_directions(emb, is_query=is_query, pool="all")
    s_test, s_all = test_pool[("lab", "ecg")], all_pool[("lab", "ecg")]
    assert s_test.shape == (4, 4) and s_all.shape == (4, 30)
    np.testing.assert_allclose(s_all[:, :4], s_test)
    np.testing.assert_allclose(np.diagonal(s_all), [sims[("lab", "ecg")][i, i] for i in (3, 5, 7, 20)])
    with pytest.raises(ValueError, match="pool"):
        retrieval_directions(emb, pool="train")


def test_candidate_set_lrap_is_sklearns_on_the_same_candidate_sets():
    """Among k candidates (the true match + k-1 drawn distractors), LRAP equals scikit-learn's
    label_ranking_average_precision_score on those sets, each (draw, query) a sample with k labels."""
    rng = np.random.default_rng(3)
    sims = rng.normal(size=(40, 60)).round(1)  # rounded: ties occur and count against the query in both
    k, draws = 4, 25
    distractors = draw_distractors(40, 60, k, draws, seed=7)
    assert distractors.shape == (draws, 40, k - 1)
    for draw in distractors:
        for i, row in enumerate(draw):
            assert i not in row and len(set(row)) == k - 1  # the true match is never its own distractor
    scores = np.concatenate(
        [np.concatenate([np.diagonal(sims)[:, None], sims[np.arange(40)[:, None], d]], axis=1) for d in distractors]
    )
    labels = np.zeros_like(scores, dtype=bool)
    labels[:, 0] = True
    rows = {r["metric"]: r for r in candidate_set_metrics(sims, k, n_draws=draws, seed=7, n_resamples=200)}
    assert rows["lrap"]["value"] == pytest.approx(label_ranking_average_precision_score(labels, scores), abs=1e-12)
    ranks = candidate_set_ranks(sims, k, draws, seed=7)
    assert rows["recall@1"]["value"] == pytest.approx(np.mean(ranks == 1), abs=1e-12)
    for row in rows.values():
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["n"] == 40


def test_candidate_sets_give_chance_on_random_embeddings_and_the_full_ranking_when_k_is_the_pool():
    rng = np.random.default_rng(4)
    k = 3
    rows = {r["metric"]: r for r in candidate_set_metrics(rng.normal(size=(300, 300)), k, n_draws=50, seed=0)}
    assert rows["lrap"]["chance"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)  # 0.611, the paper's Lab->ECG
    assert rows["recall@1"]["chance"] == pytest.approx(1 / 3) and rows["recall@2"]["chance"] == pytest.approx(2 / 3)
    for metric, row in rows.items():
        assert row["value"] == pytest.approx(row["chance"], abs=0.02), metric
        assert row["ci_low"] < row["chance"] < row["ci_high"], metric
    perfect = {r["metric"]: r["value"] for r in candidate_set_metrics(np.eye(30) + 0.01, k, n_draws=5)}
    assert perfect == {"lrap": 1.0, "recall@1": 1.0, "recall@2": 1.0}
    sims = rng.normal(size=(20, 20))
    assert (candidate_set_ranks(sims, 20, 3) == true_match_ranks(sims)).all()
    with pytest.raises(ValueError, match="k must be"):
        candidate_set_ranks(sims, 21, 3)


def test_direction_similarities_from_the_saved_embeddings():
    """The frame the retrieval job saves gives each direction's matrix over the test patients with both modalities,
    true match on the diagonal; pool 'all' appends the other splits' patients as further candidates."""
    rng = np.random.default_rng(5)
    n = 12
    vectors = {m: rng.normal(size=(n, 4)) for m in ("lab", "ecg", "echo")}
    frame = pl.DataFrame(
        {
            "subject_id": np.arange(100, 100 + n),
            "split": ["test"] * 6 + ["train"] * 6,
            **{f"emb_{m}": [v.tolist() for v in x] for m, x in vectors.items()},
        }
    ).with_columns(emb_echo=pl.when(pl.col("subject_id") == 101).then(None).otherwise(pl.col("emb_echo")))
    test = direction_similarities(frame)
    assert set(test) == {direction_name(q, c) for q, c in DIRECTIONS}
    sim, ids = test["lab_to_echo"]
    assert ids.tolist() == [100, 102, 103, 104, 105] and sim.shape == (5, 5)  # 101 has no echo
    np.testing.assert_allclose(np.diagonal(sim), [
        vectors["lab"][i] @ vectors["echo"][i] / np.linalg.norm(vectors["lab"][i]) / np.linalg.norm(vectors["echo"][i])
        for i in (0, 2, 3, 4, 5)
    ])  # fmt: skip
    sim_all, ids_all = direction_similarities(frame, "all")["lab_to_ecg"]
    assert sim_all.shape == (6, 12) and ids_all.tolist() == list(range(100, 106))
    np.testing.assert_allclose(sim_all[:, :6], test["lab_to_ecg"][0])


# --- results, tables, figures -----------------------------------------------------------------------


def _results(tmp_path):
    diag, prog, retr = [], [], []
    for i, subset in enumerate(SUBSETS):
        frame = diagnosis_frame(120, seed=i, shift=0.5 + 0.2 * i)
        diag.append(results_frame("diagnosis", subset, diagnosis_metrics(frame, n_resamples=100, seed=0)))
        prog.append(results_frame("prognosis", subset, [{"metric": "c_index", "value": 0.53 + 0.01 * i, "sd": 0.04}]))
    for j, (q, c) in enumerate(DIRECTIONS):
        sims = np.eye(40) * (0.2 * j) + np.random.default_rng(j).normal(size=(40, 40))
        retr.append(results_frame("retrieval", direction_name(q, c), retrieval_metrics(sims, n_resamples=100)))
    paths = [write_results(f, tmp_path, t) for f, t in ((diag, "diagnosis"), (prog, "prognosis"), (retr, "retrieval"))]
    return [pl.read_parquet(p) for p in paths], paths


def test_results_frames_and_tables(tmp_path):
    (diag, prog, retr), paths = _results(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "eval/diagnosis.parquet",
        "eval/prognosis.parquet",
        "eval/retrieval.parquet",
    ]
    for df in (diag, prog, retr):
        assert df.schema == pl.Schema(RESULT_COLUMNS)
    assert prog["ci_low"].null_count() == prog.height and diag["sd"].null_count() == diag.height

    table = table2_markdown(diag, prog)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Lab | ECG | ECHO |") and "AUC" in lines[0] and "C-index" in lines[0]
    data = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert len(data) == 7
    marks = [tuple(c == "✓" for c in row[:3]) for row in data]
    assert marks == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (True, True, False),
        (True, False, True),
        (False, True, True),
        (True, True, True),
    ]
    for col, (df, metric) in enumerate(((diag, "accuracy"), (diag, "auc"), (prog, "c_index")), start=3):
        values = df.filter(pl.col("metric") == metric)
        best = values["subset"][int(values["value"].arg_max())]
        bold = [SUBSETS[i] for i, row in enumerate(data) if row[col].startswith("**")]
        assert bold == [best]
    assert re.fullmatch(r"\*\*0\.590 ± 0\.04\*\*", data[6][5])
    assert re.fullmatch(r"\d\.\d{3} \(\d\.\d{2}–\d\.\d{2}\)", data[0][4])

    table = table3_markdown(retr)
    lines = table.strip().splitlines()
    assert lines[0] == "| Metric | Lab→ECG | ECG→Lab | Lab→ECHO | ECHO→Lab | ECG→ECHO | ECHO→ECG |"
    data = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[0] for row in data] == ["LRAP", "Recall@1", "Recall@2"]
    for row in data:
        assert sum(c.startswith("**") for c in row[1:]) >= 1
    assert data[0][6].startswith("**")  # the last direction has the strongest diagonal


def test_missing_subset_is_a_dash(tmp_path):
    (diag, prog, _), _ = _results(tmp_path)
    table = table2_markdown(diag.filter(pl.col("subset") != "ecg"), prog)
    row = table.strip().splitlines()[3]
    assert row.count("—") == 2


def test_results_frame_rejects_unknown_names():
    with pytest.raises(ValueError, match="subset"):
        results_frame("diagnosis", "ecg+lab", [{"metric": "auc", "value": 0.5}])
    with pytest.raises(ValueError, match="metric"):
        results_frame("prognosis", "lab", [{"metric": "auc", "value": 0.5}])
    with pytest.raises(ValueError, match="label"):
        write_predictions(diagnosis_frame(10).drop("label"), "/nonexistent", "diagnosis", "lab")


def test_roc_figure(tmp_path):
    curves = {}
    for i, subset in enumerate(SUBSETS):
        frame = diagnosis_frame(100, seed=i, shift=0.3 * i)
        curves[subset] = (frame["label"].to_numpy(), frame["score"].to_numpy())
    path = plot_roc(curves, tmp_path / "roc.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
