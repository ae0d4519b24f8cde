"""Evaluation of TGMM (paper §5.1-5.2, docs/MODEL.md): metrics, confidence intervals, tables and figures.

Tasks and their metrics
-----------------------
- **diagnosis**: AUC (``sklearn.metrics.roc_auc_score`` on the score) and accuracy
  (``sklearn.metrics.accuracy_score`` on the 0/1 prediction), each with a percentile-bootstrap 95% CI
  over the patients of the test split.
- **prognosis**: Harrell's C-index (``sksurv.metrics.concordance_index_censored``) on the test set of
  every (repeat, fold) of the repeated cross-validation (5 × 2 = 10 folds, §5.1), reported as the mean
  ± sample standard deviation (``ddof=1``) over the folds. Kaplan–Meier curves
  (``sksurv.nonparametric.kaplan_meier_estimator``) for predicted high/low-risk groups with a log-rank
  test (``sksurv.compare.compare_survival``).
- **retrieval**: LRAP (``sklearn.metrics.label_ranking_average_precision_score`` with the identity as the
  relevance labels), Recall@1 and Recall@2 with bootstrap CIs over the queries, in the six directions
  query modality → candidate modality (Table 3).

Decisions (where the paper is silent)
-------------------------------------
- **Bootstrap** (:func:`bootstrap_ci`): ``n_resamples`` (default 1000) resamples of the patients (or
  queries) with replacement drawn by ``numpy.random.default_rng(seed)``; the metric is recomputed on each
  and the CI is the ``alpha/2`` and ``1 - alpha/2`` quantiles (linear interpolation) of the defined
  resample values. A resample on which the metric is undefined (e.g. only one class for the AUC: the
  metric raises ``ValueError`` or returns a non-finite value) is skipped and counted (``n_skipped``); it is
  not redrawn. The point estimate is the metric on the full data.
- **Kaplan–Meier groups** (:func:`km_groups`): within each (repeat, fold) test set a patient is *high risk*
  when its risk is strictly above that test set's median risk (``threshold="median"``; a float ``q``
  uses the ``q`` quantile instead), *low risk* otherwise. Thresholds are per fold because risk scores of
  models trained on different folds are not on a common scale. The groups are pooled over the folds of
  **repeat 0 only** (default ``repeat=0``): in one repeat of k-fold cross-validation every patient is a
  test patient exactly once, so the pooled groups hold independent patients as the log-rank test
  assumes. ``repeat=None`` pools every repeat (each patient then counted once per repeat, which makes the
  p-value anti-conservative; for display only).
- **Retrieval candidate pool** (:func:`retrieval_directions`): by default (``pool="test"``) the
  candidates for a query are the other modality's embeddings of all patients of the same test split,
  the query's own patient included (square similarity matrix, true match on the diagonal). With
  ``pool="all"`` every patient passed in is a candidate (test patients first, so the true match of
  query ``i`` is still column ``i``): a harder task with more distractors. The rank of the true match
  counts every candidate whose similarity is ``>=`` the true match's (ties count against the query),
  which is the rank ``label_ranking_average_precision_score`` uses; with a single relevant candidate
  per query, LRAP = mean(1 / rank) and Recall@k = mean(rank <= k).
- **Results frames** (:func:`results_frame`) have the columns of :data:`RESULT_COLUMNS`; for retrieval the
  ``subset`` column holds the direction (``lab_to_ecg``, see :data:`DIRECTIONS`).

Outputs (paths are built by :func:`results_path`, :func:`predictions_path`):
``{out_dir}/eval/{diagnosis,prognosis,retrieval}.parquet``,
``{out_dir}/eval/predictions/{task}/{subset}.parquet`` (columns :data:`PREDICTION_COLUMNS`), Markdown
tables from :func:`table2_markdown` / :func:`table3_markdown` and PNG figures from :func:`plot_roc` /
:func:`plot_km`. Figures are drawn on ``matplotlib.figure.Figure`` objects, which render with the Agg
backend and touch no global pyplot state.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    label_ranking_average_precision_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.metrics.pairwise import cosine_similarity
from sksurv.compare import compare_survival
from sksurv.metrics import concordance_index_censored
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from hftri_mimic.common.storage import write_parquet_atomic
from models.config import DIRECTIONS, MODALITIES, SUBSETS, TASKS, direction_name

# Per-patient prediction frames, one per (task, subset): column -> polars dtype.
PREDICTION_COLUMNS: dict[str, dict[str, Any]] = {
    # score: any score increasing with the probability of HF (probability or log-odds); pred: the 0/1 decision.
    "diagnosis": {
        "subject_id": pl.Int64,
        "split": pl.String,
        "label": pl.Int8,
        "score": pl.Float64,
        "pred": pl.Int8,
    },
    # risk: higher = earlier event expected; time in days from the index admission; event False = censored.
    "prognosis": {
        "subject_id": pl.Int64,
        "repeat": pl.Int64,
        "fold": pl.Int64,
        "time": pl.Float64,
        "event": pl.Boolean,
        "risk": pl.Float64,
    },
    # One row per query: rank of its true match among the candidates (1 = best), score = similarity
    # to the true match, n_candidates = size of the candidate pool.
    "retrieval": {
        "subject_id": pl.Int64,
        "split": pl.String,
        "rank": pl.Int64,
        "score": pl.Float64,
        "n_candidates": pl.Int64,
    },
}

# Columns of the results tables ({out_dir}/eval/{task}.parquet). n: patients (diagnosis), queries
# (retrieval) or folds (prognosis); n_skipped: bootstrap resamples on which the metric was undefined.
RESULT_COLUMNS: dict[str, Any] = {
    "subset": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "sd": pl.Float64,
    "n": pl.Int64,
    "n_skipped": pl.Int64,
}

METRICS: dict[str, tuple[str, ...]] = {
    "diagnosis": ("accuracy", "auc"),
    "prognosis": ("c_index",),
    "retrieval": ("lrap", "recall@1", "recall@2"),
}

DISPLAY = {"lab": "Lab", "ecg": "ECG", "echo": "ECHO"}
METRIC_DISPLAY = {
    "accuracy": "ACC",
    "auc": "AUC",
    "c_index": "C-index",
    "lrap": "LRAP",
    "recall@1": "Recall@1",
    "recall@2": "Recall@2",
}


# ---------------------------------------------------------------------------------------------------
# Bootstrap


@dataclass(frozen=True)
class BootstrapCI:
    """Point estimate and percentile-bootstrap CI; unpacks as ``value, low, high``.

    ``n_skipped`` of the ``n_resamples`` resamples had an undefined metric and were left out of the
    quantiles; ``n`` is the number of resampled units (patients or queries).
    """

    value: float
    low: float
    high: float
    n: int
    n_resamples: int
    n_skipped: int

    def __iter__(self) -> Iterator[float]:
        return iter((self.value, self.low, self.high))


def defined_metric(metric_fn: Callable[..., float], arrays: Sequence[np.ndarray]) -> float:
    """metric_fn(*arrays) as a float, NaN where the metric is undefined (raises ValueError / not finite).

    scikit-learn's UndefinedMetricWarning (e.g. one class only for the AUC, which then returns NaN) is
    silenced: the caller counts undefined resamples instead.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            value = float(metric_fn(*arrays))
    except (ValueError, ZeroDivisionError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: Any,
    n_resamples: int = 1000,
    seed: int | None = 0,
    alpha: float = 0.05,
) -> BootstrapCI:
    """Percentile bootstrap CI of ``metric_fn(*arrays)`` over the rows (patients) of ``arrays``.

    All arrays share their first axis; resample ``b`` takes the same row indices, drawn with replacement
    by ``numpy.random.default_rng(seed)``, from each. Resamples where the metric is undefined are skipped
    and counted. Returns NaN bounds when no resample is defined, and a NaN value when the metric is
    undefined on the full data.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    data = [np.asarray(a) for a in arrays]
    n = len(data[0])
    if any(len(a) != n for a in data):
        raise ValueError(f"arrays differ in length: {[len(a) for a in data]}")
    if n == 0:
        raise ValueError("bootstrap_ci got empty arrays")
    value = defined_metric(metric_fn, data)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for b in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        stats[b] = defined_metric(metric_fn, [a[idx] for a in data])
    valid = stats[~np.isnan(stats)]
    n_skipped = int(n_resamples - valid.size)
    if valid.size:
        low, high = (float(q) for q in np.quantile(valid, [alpha / 2, 1 - alpha / 2]))
    else:
        low = high = math.nan
    return BootstrapCI(value, low, high, n, n_resamples, n_skipped)


# ---------------------------------------------------------------------------------------------------
# Prediction frames


def validate_predictions(frame: pl.DataFrame, task: str) -> pl.DataFrame:
    """Check and cast a per-patient prediction frame to :data:`PREDICTION_COLUMNS` (column order too).

    Raises ``ValueError`` naming missing columns, nulls or NaNs, labels/predictions outside {0, 1} and
    negative times.
    """
    if task not in PREDICTION_COLUMNS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    schema = PREDICTION_COLUMNS[task]
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise ValueError(f"{task} predictions lack column(s) {missing}; expected {list(schema)}")
    out = frame.select(pl.col(c).cast(t) for c, t in schema.items())
    nulls = [c for c in schema if out[c].null_count()]
    nulls += [c for c, t in schema.items() if t == pl.Float64 and out[c].is_nan().any()]
    if nulls:
        raise ValueError(f"{task} predictions have null/NaN values in {sorted(set(nulls))}")
    for col in ("label", "pred"):
        if col in schema and not out[col].is_in([0, 1]).all():
            raise ValueError(f"{task} predictions: column {col!r} must be 0/1")
    if task == "prognosis" and (out["time"] < 0).any():
        raise ValueError("prognosis predictions: negative follow-up time")
    return out


def results_path(out_dir: str | Path, task: str) -> Path:
    """``{out_dir}/eval/{task}.parquet``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return Path(out_dir) / "eval" / f"{task}.parquet"


def predictions_path(out_dir: str | Path, task: str, subset: str) -> Path:
    """``{out_dir}/eval/predictions/{task}/{subset}.parquet`` (retrieval: subset = direction name)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return Path(out_dir) / "eval" / "predictions" / task / f"{subset}.parquet"


def write_predictions(frame: pl.DataFrame, out_dir: str | Path, task: str, subset: str) -> Path:
    """Validate and write (atomically) a per-patient prediction frame to :func:`predictions_path`; returns the path."""
    path = predictions_path(out_dir, task, subset)
    write_parquet_atomic(validate_predictions(frame, task), path)
    return path


# ---------------------------------------------------------------------------------------------------
# Diagnosis


def diagnosis_metrics(
    pred_frame: pl.DataFrame,
    n_resamples: int = 1000,
    seed: int | None = 0,
    *,
    alpha: float = 0.05,
    split: str | None = "test",
) -> list[dict[str, Any]]:
    """AUC and accuracy with percentile-bootstrap CIs over patients.

    Rows of ``pred_frame`` (see :data:`PREDICTION_COLUMNS`) with ``split == split`` are evaluated
    (``split=None``: all rows). Both metrics use the same seed, hence the same resampled patient sets.
    Returns rows ``{metric, value, ci_low, ci_high, n, n_skipped}`` for ``accuracy`` and ``auc``.
    """
    frame = validate_predictions(pred_frame, "diagnosis")
    if split is not None:
        frame = frame.filter(pl.col("split") == split)
    if frame.height == 0:
        raise ValueError(f"no diagnosis predictions in split {split!r}")
    label = frame["label"].to_numpy()
    score = frame["score"].to_numpy()
    pred = frame["pred"].to_numpy()
    metric_fns: dict[str, tuple[Callable[..., float], np.ndarray]] = {
        "accuracy": (accuracy_score, pred),
        "auc": (roc_auc_score, score),
    }
    rows = []
    for metric, (fn, estimate) in metric_fns.items():
        ci = bootstrap_ci(fn, label, estimate, n_resamples=n_resamples, seed=seed, alpha=alpha)
        rows.append(_ci_row(metric, ci))
    return rows


def _ci_row(metric: str, ci: BootstrapCI) -> dict[str, Any]:
    return {
        "metric": metric,
        "value": ci.value,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "n": ci.n,
        "n_skipped": ci.n_skipped,
    }


# ---------------------------------------------------------------------------------------------------
# Prognosis


def prognosis_fold_frame(pred_frame: pl.DataFrame) -> pl.DataFrame:
    """C-index of every (repeat, fold) test set: columns repeat, fold, n, n_events, c_index.

    ``concordance_index_censored(event, time, risk)``; a fold without comparable pairs (e.g. no event)
    gets a null C-index.
    """
    frame = validate_predictions(pred_frame, "prognosis")
    rows = []
    for (repeat, fold), part in frame.group_by(["repeat", "fold"], maintain_order=True):
        event = part["event"].to_numpy()
        try:
            cindex = float(concordance_index_censored(event, part["time"].to_numpy(), part["risk"].to_numpy())[0])
        except (ValueError, ZeroDivisionError):  # sksurv: NoComparablePairException is a ValueError
            cindex = None
        rows.append({"repeat": repeat, "fold": fold, "n": part.height, "n_events": int(event.sum()), "c_index": cindex})
    schema = {"repeat": pl.Int64, "fold": pl.Int64, "n": pl.Int64, "n_events": pl.Int64, "c_index": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row").sort("repeat", "fold")


def prognosis_metrics(pred_frame: pl.DataFrame, *, ddof: int = 1) -> list[dict[str, Any]]:
    """C-index mean ± sd over the (repeat, fold) test sets.

    Returns one row ``{metric: "c_index", value: mean, sd, n: folds with a defined C-index,
    per_fold: [c-index of each fold in (repeat, fold) order], folds: [(repeat, fold), ...]}``.
    ``sd`` uses ``ddof`` (default 1, the sample standard deviation; NaN for a single fold).
    """
    folds = prognosis_fold_frame(pred_frame).drop_nulls("c_index")
    if folds.height == 0:
        raise ValueError("no (repeat, fold) test set has comparable pairs: the C-index is undefined")
    values = folds["c_index"].to_numpy()
    sd = float(np.std(values, ddof=ddof)) if values.size > ddof else math.nan
    return [
        {
            "metric": "c_index",
            "value": float(np.mean(values)),
            "sd": sd,
            "n": int(values.size),
            "per_fold": values.tolist(),
            "folds": list(zip(folds["repeat"].to_list(), folds["fold"].to_list(), strict=True)),
        }
    ]


@dataclass(frozen=True)
class KMCurve:
    """Kaplan–Meier estimate of one risk group (time in the prediction frame's unit, days)."""

    label: str
    time: np.ndarray
    survival: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n: int
    n_events: int

    def survival_at(self, t: float) -> float:
        """Ŝ(t): the step function, 1 before the first event time."""
        i = int(np.searchsorted(self.time, t, side="right"))
        return 1.0 if i == 0 else float(self.survival[i - 1])


def risk_groups(
    pred_frame: pl.DataFrame,
    threshold: Literal["median"] | float = "median",
    repeat: int | None = 0,
) -> pl.DataFrame:
    """Assign each test patient to ``high`` or ``low`` risk within its (repeat, fold) test set.

    High = risk strictly above the fold's median (or ``threshold`` quantile when a float in (0, 1)).
    Keeps repeat ``repeat`` only (None: all repeats). Adds a ``group`` column to the validated frame.
    """
    q = 0.5 if threshold == "median" else float(threshold)
    if not 0 < q < 1:
        raise ValueError(f"threshold must be 'median' or a quantile in (0, 1), got {threshold!r}")
    frame = validate_predictions(pred_frame, "prognosis")
    if repeat is not None:
        frame = frame.filter(pl.col("repeat") == repeat)
        if frame.height == 0:
            raise ValueError(f"no prognosis predictions for repeat {repeat}")
    cut = pl.col("risk").quantile(q, interpolation="linear").over(["repeat", "fold"])
    return frame.with_columns(group=pl.when(pl.col("risk") > cut).then(pl.lit("high")).otherwise(pl.lit("low")))


def km_groups(
    pred_frame: pl.DataFrame,
    threshold: Literal["median"] | float = "median",
    repeat: int | None = 0,
) -> tuple[dict[str, KMCurve], float]:
    """Kaplan–Meier curves of the predicted high/low-risk groups and the log-rank p-value.

    Groups from :func:`risk_groups` (per-fold median split, repeat 0 by default — see the module
    docstring), pooled over folds. Curves: ``kaplan_meier_estimator(event, time, conf_type="log-log")``
    (95% pointwise CI); test: ``compare_survival`` (log-rank, 1 degree of freedom). Returns
    ``({"high": KMCurve, "low": KMCurve}, p)``.
    """
    frame = risk_groups(pred_frame, threshold, repeat)
    counts = dict(frame["group"].value_counts().iter_rows())
    if counts.get("high", 0) == 0 or counts.get("low", 0) == 0:
        raise ValueError(f"both risk groups need patients, got {counts} (are all risks equal?)")
    groups = {}
    for name in ("high", "low"):
        part = frame.filter(pl.col("group") == name)
        event, time = part["event"].to_numpy(), part["time"].to_numpy()
        t, s, conf = kaplan_meier_estimator(event, time, conf_type="log-log")
        groups[name] = KMCurve(name, t, s, conf[0], conf[1], part.height, int(event.sum()))
    y = Surv.from_arrays(event=frame["event"].to_numpy(), time=frame["time"].to_numpy())
    _, pvalue = compare_survival(y, frame["group"].to_numpy())
    return groups, float(pvalue)


# ---------------------------------------------------------------------------------------------------
# Retrieval


def retrieval_directions(
    embeddings: Mapping[str, np.ndarray],
    *,
    is_query: np.ndarray | None = None,
    pool: Literal["test", "all"] = "test",
) -> dict[tuple[str, str], np.ndarray]:
    """Cosine similarity matrices for the six directions (query modality, candidate modality).

    ``embeddings[m]`` is (n, d_m) with row ``i`` the same patient for every modality (lab, ecg, echo).
    ``is_query`` (bool, n) marks the query patients (the test split; default: all rows). With
    ``pool="test"`` the candidates are the query patients (n_q × n_q); with ``pool="all"`` every row is a
    candidate, query patients first (n_q × n). Either way the true match of query ``i`` is column ``i``.
    """
    missing = [m for m in MODALITIES if m not in embeddings]
    if missing:
        raise ValueError(f"retrieval needs embeddings of {MODALITIES}; missing {missing}")
    mats = {m: np.asarray(embeddings[m], dtype=np.float64) for m in MODALITIES}
    n = len(mats[MODALITIES[0]])
    if any(len(x) != n or x.ndim != 2 for x in mats.values()):
        raise ValueError(f"embeddings must be 2-D with the same rows: { {m: x.shape for m, x in mats.items()} }")
    for m, x in mats.items():
        if not np.isfinite(x).all():
            raise ValueError(f"{m} embeddings contain non-finite values")
    query = np.ones(n, dtype=bool) if is_query is None else np.asarray(is_query, dtype=bool)
    if query.shape != (n,) or not query.any():
        raise ValueError("is_query must be a boolean vector over the rows with at least one query")
    if pool == "test":
        cand_order = np.flatnonzero(query)
    elif pool == "all":
        cand_order = np.concatenate([np.flatnonzero(query), np.flatnonzero(~query)])
    else:
        raise ValueError(f"pool must be 'test' or 'all', got {pool!r}")
    return {(q, c): cosine_similarity(mats[q][query], mats[c][cand_order]) for q, c in DIRECTIONS}


def true_match_ranks(similarity: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of candidate ``i`` for query ``i``: candidates with similarity >= the true match's."""
    sim = _check_similarity(similarity)
    true = sim[np.arange(sim.shape[0]), np.arange(sim.shape[0])]
    return (sim >= true[:, None]).sum(axis=1)


def _check_similarity(similarity: np.ndarray) -> np.ndarray:
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] == 0 or sim.shape[1] < sim.shape[0]:
        raise ValueError(f"similarity must be (n_queries, n_candidates >= n_queries), got {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity contains non-finite values")
    return sim


def retrieval_metrics(
    similarity: np.ndarray,
    n_resamples: int = 1000,
    seed: int | None = 0,
    *,
    alpha: float = 0.05,
    ks: Sequence[int] = (1, 2),
) -> list[dict[str, Any]]:
    """LRAP and Recall@k of one direction with bootstrap CIs over the queries.

    ``similarity`` (n_queries, n_candidates), true match of query ``i`` = candidate ``i``. The LRAP value
    is sklearn's ``label_ranking_average_precision_score`` with the identity as labels. For the CIs each
    query's row is kept whole: the metrics are means of per-query terms (1 / rank and rank <= k), so
    resampling queries is resampling these terms.
    """
    sim = _check_similarity(similarity)
    n_q, n_c = sim.shape
    labels = np.eye(n_q, n_c, dtype=bool)
    lrap = float(label_ranking_average_precision_score(labels, sim))
    rows = retrieval_metrics_from_ranks(true_match_ranks(sim), n_resamples=n_resamples, seed=seed, alpha=alpha, ks=ks)
    rows[0]["value"] = lrap
    return rows


def retrieval_metrics_from_ranks(
    ranks: np.ndarray,
    n_resamples: int = 1000,
    seed: int | None = 0,
    *,
    alpha: float = 0.05,
    ks: Sequence[int] = (1, 2),
) -> list[dict[str, Any]]:
    """LRAP, Recall@k with bootstrap CIs from the rank of each query's true match (1 = best, ties counted
    against the query). With one relevant candidate per query, sklearn's ``label_ranking_average_precision_score``
    equals mean(1 / rank); the metrics are means of per-query terms, so resampling queries resamples these terms."""
    ranks = np.asarray(ranks, dtype=np.float64)
    ci = bootstrap_ci(np.mean, 1.0 / ranks, n_resamples=n_resamples, seed=seed, alpha=alpha)
    rows = [_ci_row("lrap", ci)]
    for k in ks:
        ci = bootstrap_ci(np.mean, (ranks <= k).astype(float), n_resamples=n_resamples, seed=seed, alpha=alpha)
        rows.append(_ci_row(f"recall@{k}", ci))
    return rows


def direction_similarities(
    embeddings: pl.DataFrame, pool: Literal["test", "all"] = "test"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cosine similarity matrix and query subject ids of every direction that ``embeddings`` holds.

    ``embeddings``: one row per patient with ``subject_id``, ``split`` and ``emb_lab`` / ``emb_ecg`` / ``emb_echo``
    (a list of floats, null where the patient lacks the modality or the model does not use it), as the retrieval
    job writes them. Queries are the test patients with both modalities of a direction; candidates the same patients
    (``pool="test"``) or every patient with both (``pool="all"``), test patients first, so the true match of query
    ``i`` is column ``i``. Directions with fewer than two queries are left out. Keyed by direction name
    (``lab_to_ecg``)."""
    if pool not in ("test", "all"):
        raise ValueError(f"pool must be 'test' or 'all', got {pool!r}")
    result: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for query, candidate in DIRECTIONS:
        q_col, c_col = f"emb_{query}", f"emb_{candidate}"
        if q_col not in embeddings.columns or c_col not in embeddings.columns:
            continue
        both = embeddings.filter(pl.col(q_col).is_not_null() & pl.col(c_col).is_not_null())
        if pool == "test":
            both = both.filter(pl.col("split") == "test")
        both = both.sort(pl.col("split") != "test", "subject_id")  # test queries first: true match = column i
        is_query = (both["split"] == "test").to_numpy()
        if is_query.sum() < 2:
            continue
        queries = np.asarray(both[q_col].to_list(), dtype=np.float64)[is_query]
        candidates = np.asarray(both[c_col].to_list(), dtype=np.float64)
        ids = both.filter(pl.Series(is_query))["subject_id"].to_numpy()
        result[direction_name(query, candidate)] = (cosine_similarity(queries, candidates), ids)
    return result


def draw_distractors(n_queries: int, n_candidates: int, k: int, n_draws: int, seed: int = 0) -> np.ndarray:
    """Column indices of ``k - 1`` distractors per query and draw: (n_draws, n_queries, k - 1).

    Query ``i``'s distractors are drawn uniformly without replacement from every column but ``i`` (its true match),
    afresh in each draw, by ``numpy.random.default_rng(seed)``."""
    if not 2 <= k <= n_candidates:
        raise ValueError(f"k must be between 2 and the {n_candidates} candidates, got {k}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    rng = np.random.default_rng(seed)
    others = np.tile(np.arange(n_candidates - 1), (n_queries, 1))
    picks = np.stack([rng.permuted(others, axis=1)[:, : k - 1] for _ in range(n_draws)])
    # positions 0..n_c-2 of the other columns: those at or past column i shift by one to skip it
    return picks + (picks >= np.arange(n_queries)[None, :, None])


def candidate_set_ranks(similarity: np.ndarray, k: int, n_draws: int, seed: int = 0) -> np.ndarray:
    """Rank (1 = best, ties against the query) of each query's true match among itself and ``k - 1`` distractors
    (:func:`draw_distractors`): (n_draws, n_queries). This is the setting the paper's Table 3 figures resemble
    (docs/MODEL.md, Retrieval)."""
    sim = _check_similarity(similarity)
    n_q, n_c = sim.shape
    distractors = draw_distractors(n_q, n_c, k, n_draws, seed)
    true = sim[np.arange(n_q), np.arange(n_q)]
    scores = sim[np.arange(n_q)[None, :, None], distractors]
    return 1 + (scores >= true[None, :, None]).sum(axis=2)


def candidate_set_metrics(
    similarity: np.ndarray,
    k: int,
    *,
    n_draws: int = 100,
    seed: int = 0,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    ks: Sequence[int] = (1, 2),
) -> list[dict[str, Any]]:
    """LRAP and Recall@j among ``k`` candidates (:func:`candidate_set_ranks`), averaged over the draws, with
    bootstrap CIs over the queries (each query's terms averaged over its draws first, so a resample keeps a query
    whole). Each row also carries ``chance``: the metric's expectation for a random ranking (LRAP H_k / k, Recall@j
    j / k)."""
    ranks = candidate_set_ranks(similarity, k, n_draws, seed).astype(np.float64)
    chance = {"lrap": sum(1.0 / r for r in range(1, k + 1)) / k, **{f"recall@{j}": min(j, k) / k for j in ks}}
    per_query = {"lrap": (1.0 / ranks).mean(axis=0), **{f"recall@{j}": (ranks <= j).mean(axis=0) for j in ks}}
    rows = []
    for metric, terms in per_query.items():
        ci = bootstrap_ci(np.mean, terms, n_resamples=n_resamples, seed=seed, alpha=alpha)
        rows.append({**_ci_row(metric, ci), "chance": chance[metric]})
    return rows


def retrieval_predictions(similarity: np.ndarray, subject_ids: Sequence[int], split: str = "test") -> pl.DataFrame:
    """Per-query frame (:data:`PREDICTION_COLUMNS` ``retrieval``): rank and similarity of the true match."""
    sim = _check_similarity(similarity)
    ids = np.asarray(subject_ids)
    if ids.shape != (sim.shape[0],):
        raise ValueError(f"{len(ids)} subject ids for {sim.shape[0]} queries")
    frame = pl.DataFrame(
        {
            "subject_id": ids,
            "split": [split] * sim.shape[0],
            "rank": true_match_ranks(sim),
            "score": np.diagonal(sim)[: sim.shape[0]],
            "n_candidates": np.full(sim.shape[0], sim.shape[1]),
        }
    )
    return validate_predictions(frame, "retrieval")


# ---------------------------------------------------------------------------------------------------
# Results and tables


def results_frame(task: str, subset: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows of one (task, subset) as a frame with :data:`RESULT_COLUMNS` (nulls where not applicable).

    ``subset`` is a modality subset (``lab+ecg``) for diagnosis/prognosis and a direction name
    (``lab_to_ecg``) for retrieval. Extra keys of the rows (e.g. ``per_fold``) are dropped.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    allowed = SUBSETS if task != "retrieval" else tuple(direction_name(q, c) for q, c in DIRECTIONS)
    if subset not in allowed:
        raise ValueError(f"unknown {task} subset {subset!r}; expected one of {allowed}")
    records = []
    for row in rows:
        if row.get("metric") not in METRICS[task]:
            raise ValueError(f"unknown {task} metric {row.get('metric')!r}; expected one of {METRICS[task]}")
        record = {col: row.get(col) for col in RESULT_COLUMNS}
        record["subset"] = subset
        for col in ("value", "ci_low", "ci_high", "sd"):
            if record[col] is not None and not math.isfinite(record[col]):
                record[col] = None  # NaN (undefined) stored as null
        records.append(record)
    return pl.DataFrame(records, schema=RESULT_COLUMNS, orient="row")


def write_results(frames: Sequence[pl.DataFrame], out_dir: str | Path, task: str) -> Path:
    """Concatenate :func:`results_frame` outputs of one task and write ``{out_dir}/eval/{task}.parquet``."""
    path = results_path(out_dir, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.concat(frames, how="vertical").write_parquet(path)
    return path


def format_cell(row: Mapping[str, Any] | None, digits: int, ci_digits: int) -> str:
    if row is None or row["value"] is None:
        return "—"
    text = f"{row['value']:.{digits}f}"
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        text += f" ({row['ci_low']:.{ci_digits}f}–{row['ci_high']:.{ci_digits}f})"
    elif row.get("sd") is not None:
        text += f" ± {row['sd']:.{ci_digits}f}"
    return text


def _column(df: pl.DataFrame, keys: Sequence[str], metric: str, digits: int, ci_digits: int) -> list[str]:
    """Formatted cells of ``metric`` for ``keys`` (subsets or directions), the highest value(s) bold."""
    lookup = {r["subset"]: r for r in df.filter(pl.col("metric") == metric).iter_rows(named=True)}
    values = [lookup[k]["value"] if k in lookup else None for k in keys]
    defined = [v for v in values if v is not None]
    best = max(defined) if defined else None
    cells = []
    for key, value in zip(keys, values, strict=True):
        cell = format_cell(lookup.get(key), digits, ci_digits)
        cells.append(f"**{cell}**" if best is not None and value == best else cell)
    return cells


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table2_markdown(
    diagnosis_df: pl.DataFrame, prognosis_df: pl.DataFrame, *, digits: int = 3, ci_digits: int = 2
) -> str:
    """Table 2 (TGMM rows): one row per modality subset, ✓ for the modalities used, then diagnosis ACC and
    AUC with 95% CIs and the prognosis C-index mean ± sd; the best value of each metric column in bold,
    ``—`` where a subset has no result."""
    columns = [
        _column(diagnosis_df, SUBSETS, "accuracy", digits, ci_digits),
        _column(diagnosis_df, SUBSETS, "auc", digits, ci_digits),
        _column(prognosis_df, SUBSETS, "c_index", digits, ci_digits),
    ]
    header = ["Lab", "ECG", "ECHO", "Diagnosis ACC (95% CI)", "Diagnosis AUC (95% CI)", "Prognosis C-index (mean ± sd)"]
    rows = []
    for i, subset in enumerate(SUBSETS):
        parts = subset.split("+")
        marks = ["✓" if m in parts else "" for m in MODALITIES]
        rows.append([*marks, *(col[i] for col in columns)])
    return markdown_table(header, rows, [":-:"] * 3 + [":--"] * 3)


def table3_markdown(retrieval_df: pl.DataFrame, *, digits: int = 3, ci_digits: int = 2) -> str:
    """Table 3: rows LRAP, Recall@1, Recall@2; columns the six directions (Lab→ECG, ECG→Lab, ...); values
    with 95% CIs (fractions, not percentages), the best direction of each metric in bold."""
    keys = [direction_name(q, c) for q, c in DIRECTIONS]
    header = ["Metric", *(f"{DISPLAY[q]}→{DISPLAY[c]}" for q, c in DIRECTIONS)]
    rows = []
    for metric in METRICS["retrieval"]:
        rows.append([METRIC_DISPLAY[metric], *_column(retrieval_df, keys, metric, digits, ci_digits)])
    return markdown_table(header, rows, [":--"] * len(header))


# ---------------------------------------------------------------------------------------------------
# Figures


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "HF diagnosis"
) -> Path:
    """ROC curves of several subsets on one plot (Figure 5a): ``curves[subset] = (label, score)``.

    The legend gives each subset's AUC (``roc_auc_score``); subsets are drawn in Table 2 order.
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    order = [s for s in SUBSETS if s in curves] + [s for s in curves if s not in SUBSETS]
    for subset in order:
        label, score = (np.asarray(a) for a in curves[subset])
        fpr, tpr, _ = roc_curve(label, score)
        ax.plot(fpr, tpr, lw=1.5, label=f"{subset} (AUC {roc_auc_score(label, score):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, path)


def plot_km(groups: Mapping[str, KMCurve], pvalue: float, path: str | Path, title: str = "Risk stratification") -> Path:
    """Kaplan–Meier curves of the risk groups with 95% bands; the log-rank p-value in the title (Figure 6)."""
    if not groups:
        raise ValueError("plot_km needs at least one group")
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    colors = {"high": "tab:red", "low": "tab:blue"}
    for name, curve in groups.items():
        t = np.concatenate([[0.0], curve.time])
        color = colors.get(name)
        line = ax.step(
            t,
            np.concatenate([[1.0], curve.survival]),
            where="post",
            color=color,
            lw=1.5,
            label=f"{name} risk (n={curve.n}, events={curve.n_events})",
        )[0]
        ax.fill_between(
            t,
            np.concatenate([[1.0], curve.ci_low]),
            np.concatenate([[1.0], curve.ci_high]),
            step="post",
            alpha=0.2,
            color=line.get_color(),
        )
    ptext = f"{pvalue:.3g}" if pvalue >= 1e-4 else f"{pvalue:.1e}"
    ax.set(
        xlabel="Days since index admission",
        ylabel="Survival probability",
        ylim=(0, 1.02),
        title=f"{title} (log-rank p = {ptext})",
    )
    ax.legend(loc="lower left", fontsize="small")
    return save_figure(fig, path)
