"""Task-level evaluation of the saved predictions (the workflow's ``evaluate_*`` and ``results_tables`` rules).

Each function reads ``{out_dir}/eval/predictions/{task}/*.parquet`` frames (``PREDICTION_COLUMNS``) and returns the
rows of ``{out_dir}/eval/{task}.parquet`` (``RESULT_COLUMNS``, both in :mod:`models.evaluation`) plus what the
figures need; the metrics themselves are :mod:`models.evaluation`'s (scikit-learn / scikit-survival).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from models.evaluation import (
    DIRECTIONS,
    KMCurve,
    diagnosis_metrics,
    direction_name,
    km_groups,
    prognosis_fold_frame,
    prognosis_metrics,
    results_frame,
    retrieval_metrics_from_ranks,
    table2_markdown,
    table3_markdown,
    validate_predictions,
)

__all__ = ["diagnosis_results", "prognosis_results", "results_markdown", "retrieval_results"]


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


def results_markdown(
    diagnosis: pl.DataFrame | None,
    prognosis: pl.DataFrame | None,
    retrieval: pl.DataFrame | None,
    *,
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
    for title, path in (figures or {}).items():
        lines += [f"![{title}]({path})", ""]
    return "\n".join(lines)
