"""Task-level evaluation of the saved predictions (the workflow's ``evaluate_*`` and ``results_tables`` rules).

Each function reads ``{out_dir}/eval/predictions/{task}/*.parquet`` frames (``PREDICTION_COLUMNS``) and returns the
rows of ``{out_dir}/eval/{task}.parquet`` (``RESULT_COLUMNS``, both in :mod:`models.evaluation.metrics`) plus what the
figures need; the metrics themselves are :mod:`models.evaluation.metrics`'s (scikit-learn / scikit-survival).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from models.evaluation.metrics import (
    DIRECTIONS,
    KMCurve,
    candidate_set_metrics,
    diagnosis_metrics,
    direction_name,
    direction_similarities,
    km_groups,
    prognosis_fold_frame,
    prognosis_metrics,
    results_frame,
    retrieval_metrics_from_ranks,
    table2_markdown,
    table3_markdown,
    validate_predictions,
)

__all__ = ["candidate_set_results", "diagnosis_results", "prognosis_results", "results_markdown", "retrieval_results"]


def _read(path: str | Path, task: str) -> pl.DataFrame:
    return validate_predictions(pl.read_parquet(path), task)


def diagnosis_results(
    predictions: Mapping[str, str | Path], *, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[pl.DataFrame, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """AUC and accuracy with bootstrap CIs on the test split of every subset's predictions.
    Returns (results frame, ROC inputs {subset: (label, score)} of the test patients)."""
    frames, curves = [], {}
    for subset, path in predictions.items():
        frame = _read(path, "diagnosis")
        rows = diagnosis_metrics(frame, n_resamples=n_resamples, seed=seed, alpha=alpha, split="test")
        frames.append(results_frame("diagnosis", subset, rows))
        test = frame.filter(pl.col("split") == "test")
        curves[subset] = (test["label"].to_numpy(), test["score"].to_numpy())
    return pl.concat(frames), curves


def prognosis_results(
    predictions: Mapping[str, str | Path], *, threshold: str | float = "median", repeat: int | None = 0
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, tuple[dict[str, KMCurve], float]]]:
    """C-index mean ± sd over the folds of every subset, the per-fold C-indices (subset, repeat, fold, n, n_events,
    c_index) and the Kaplan–Meier groups with their log-rank p-value per subset."""
    frames, folds, km = [], [], {}
    for subset, path in predictions.items():
        frame = _read(path, "prognosis")
        frames.append(results_frame("prognosis", subset, prognosis_metrics(frame)))
        folds.append(prognosis_fold_frame(frame).select(pl.lit(subset).alias("subset"), pl.all()))
        km[subset] = km_groups(frame, threshold, repeat)
    return pl.concat(frames), pl.concat(folds), km


def retrieval_results(
    predictions: Mapping[str, str | Path], *, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> pl.DataFrame:
    """LRAP, Recall@1, Recall@2 with CIs per direction (``subset`` column = direction name, e.g. lab_to_ecg)."""
    frames = []
    order = [direction_name(q, c) for q, c in DIRECTIONS]
    for direction in sorted(predictions, key=order.index):
        frame = _read(predictions[direction], "retrieval")
        rows = retrieval_metrics_from_ranks(frame["rank"].to_numpy(), n_resamples=n_resamples, seed=seed, alpha=alpha)
        frames.append(results_frame("retrieval", direction, rows))
    return pl.concat(frames)


def candidate_set_results(
    embeddings: pl.DataFrame,
    directions: Sequence[str],
    *,
    k: int,
    n_draws: int,
    pool: str = "test",
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pl.DataFrame:
    """LRAP, Recall@1, Recall@2 among ``k`` candidates per direction
    (:func:`models.evaluation.metrics.candidate_set_metrics`
    on the retrieval job's embeddings, the same queries and pool as the full-pool ranking), with the columns of the
    full-pool table plus ``k``, ``draws`` and ``chance`` (the metric of a random ranking)."""
    similarities = direction_similarities(embeddings, pool)  # type: ignore[arg-type]
    order = [direction_name(q, c) for q, c in DIRECTIONS]
    frames = []
    for direction in sorted(directions, key=order.index):
        if direction not in similarities:
            raise ValueError(f"retrieval embeddings hold fewer than two test queries for {direction}")
        similarity, _ = similarities[direction]
        if similarity.shape[1] < k:
            raise ValueError(
                f"retrieval {direction}: {similarity.shape[1]} candidates in the pool, fewer than "
                f"evaluate.retrieval_candidates = {k}"
            )
        rows = candidate_set_metrics(similarity, k, n_draws=n_draws, seed=seed, n_resamples=n_resamples, alpha=alpha)
        chance = pl.Series("chance", [row["chance"] for row in rows], dtype=pl.Float64)
        frames.append(
            results_frame("retrieval", direction, rows).with_columns(
                k=pl.lit(k, pl.Int64), draws=pl.lit(n_draws, pl.Int64), chance=chance
            )
        )
    return pl.concat(frames)


def results_markdown(
    diagnosis: pl.DataFrame | None,
    prognosis: pl.DataFrame | None,
    retrieval: pl.DataFrame | None,
    *,
    retrieval_candidates: pl.DataFrame | None = None,
    retrieval_subset: str = "lab+ecg+echo",
    retrieval_pool: str = "test",
    figures: Mapping[str, str] | None = None,
) -> str:
    """RESULTS.md: Table 2 (diagnosis and prognosis per modality subset) and Table 3 (retrieval directions)."""
    empty = pl.DataFrame(schema={"subset": pl.String, "metric": pl.String, "value": pl.Float64})
    lines = ["# TGMM results on this cohort", ""]
    if diagnosis is not None or prognosis is not None:
        lines += [
            "## Table 2: heart-failure diagnosis and risk stratification",
            "",
            "Diagnosis: test split, 95% percentile-bootstrap CIs. Prognosis: Harrell's C-index, mean ± sd over the "
            "repeated 2-fold cross-validation. Best value of each column in bold.",
            "",
            table2_markdown(empty if diagnosis is None else diagnosis, empty if prognosis is None else prognosis),
        ]
    if retrieval is not None:
        lines += [
            "## Table 3: cross-modal retrieval",
            "",
            f"Model trained on {retrieval_subset}; queries are test patients, candidates the "
            f"{'test patients' if retrieval_pool == 'test' else 'patients of every split'} with the other modality. "
            "95% bootstrap CIs over the queries.",
            "",
            table3_markdown(retrieval),
        ]
    if retrieval_candidates is not None:
        k, draws = int(retrieval_candidates["k"][0]), int(retrieval_candidates["draws"][0])
        chance = {row["metric"]: row["chance"] for row in retrieval_candidates.unique("metric").to_dicts()}
        lines += [
            "",
            f"## Table 3b: cross-modal retrieval among {k} candidates",
            "",
            f"The same model, queries and pool; each query's true match is ranked among itself and {k - 1} other "
            f"candidates drawn at random from the pool, averaged over {draws} draws per query. A random ranking "
            f"scores LRAP {chance['lrap']:.3f}, Recall@1 {chance['recall@1']:.3f}, Recall@2 {chance['recall@2']:.3f}. "
            "The paper's Table 3 (Recall@1 36-55%, Recall@2 68-81%, LRAP 0.61-0.74) resembles this setting with about "
            "3 candidates per query (docs/MODEL.md, Retrieval). 95% bootstrap CIs over the queries.",
            "",
            table3_markdown(retrieval_candidates),
        ]
    for title, path in (figures or {}).items():
        lines += [f"![{title}]({path})", ""]
    return "\n".join(lines)
