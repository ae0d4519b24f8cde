"""Baselines and ablations against TGMM (paper §5.3-5.4, Tables 5-6, Fig. 7): paired statistics and tables.

Every variant (a fusion baseline, an ablation, a sweep point) is trained and evaluated exactly as TGMM is, on the
same patients, splits and folds; it differs from TGMM by the ``model`` keys its config entry replaces. Each
variant is compared with TGMM on the same modality subset and task:

- **diagnosis** (test patients): the AUC difference variant - TGMM by DeLong's test for two correlated AUCs, the
  accuracy difference by the exact McNemar test (models/evaluation/significance.py). Beside each p-value, the
  difference's
  95% percentile interval from ``n_resamples`` paired bootstrap resamples of the test patients
  (``numpy.random.default_rng(seed)``, the same patients for both models in each resample). The variant's own value
  keeps its bootstrap CI.
- **prognosis** (folds of the repeated cross-validation): the mean per-fold C-index difference by the Nadeau-Bengio
  corrected resampled t-test, with its t interval. Folds share training patients, so the per-fold differences are
  correlated; a plain paired test over them (Wilcoxon, t) would treat them as independent and overstate
  significance. The correction uses n_test / n_train of the folds (for 2-fold cross-validation about 1, where the
  training part counts every patient of the repeat outside the fold's test set, validation included).

Earlier versions reported a Wilcoxon signed-rank p-value over the bootstrap resamples' differences. Resamples are
not independent samples, so that p-value shrank without limit as ``n_resamples`` grew (1e-160 for AUC differences
of a few hundredths on 84 patients). docs/HISTORY.md keeps those tables.

A cell is marked ``*`` when p > ``alpha`` (no significant difference from TGMM), the paper's convention.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, roc_auc_score

from models.config import SUBSETS
from models.evaluation.metrics import (
    DISPLAY,
    METRIC_DISPLAY,
    RESULT_COLUMNS,
    defined_metric,
    format_cell,
    markdown_table,
    prognosis_fold_frame,
    save_figure,
    validate_predictions,
)
from models.evaluation.significance import PairedTest, corrected_resampled_t_test, delong_test, mcnemar_test

REFERENCE = "tgmm"
TABLE_TITLES = {
    "fusion": "Table 5: TGMM against baseline fusions",
    "ablation": "Table 6: ablation of the textual guidance and the response module",
    "sweep": "Fig. 7: hyperparameter sweeps",
}
# A results row (models.evaluation.metrics.RESULT_COLUMNS, without the bootstrap's n_skipped) named by its table,
# variant
# and task, with its paired difference from TGMM.
COMPARE_COLUMNS: dict[str, Any] = {
    "table": pl.String,
    "variant": pl.String,
    "task": pl.String,
    **{column: dtype for column, dtype in RESULT_COLUMNS.items() if column != "n_skipped"},
    "diff": pl.Float64,
    "diff_low": pl.Float64,
    "diff_high": pl.Float64,
    "p_value": pl.Float64,
    "test": pl.String,
    "n_pairs": pl.Int64,
}


def _paired_test_frames(reference: pl.DataFrame, variant: pl.DataFrame) -> pl.DataFrame:
    ref = validate_predictions(reference, "diagnosis").filter(pl.col("split") == "test")
    var = validate_predictions(variant, "diagnosis").filter(pl.col("split") == "test")
    if set(ref["subject_id"]) != set(var["subject_id"]) or ref.height != var.height:
        raise ValueError("TGMM and the variant were not evaluated on the same test patients")
    joined = ref.join(var, on="subject_id", suffix="_variant").sort("subject_id")
    if not (joined["label"] == joined["label_variant"]).all():
        raise ValueError("TGMM and the variant disagree on the test labels")
    return joined


def _diagnosis_test(metric: str, label: np.ndarray, ref: np.ndarray, var: np.ndarray, alpha: float) -> PairedTest:
    if metric == "auc":
        try:
            return delong_test(label, ref, var, alpha=alpha)
        except ValueError:  # fewer than two patients of a class: the AUC's variance is undefined
            return PairedTest("DeLong", math.nan, math.nan)
    return mcnemar_test(label, ref, var)


def paired_diagnosis(
    reference: pl.DataFrame, variant: pl.DataFrame, *, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> list[dict[str, Any]]:
    """AUC and accuracy of ``variant`` with CIs, and its paired comparison with ``reference`` (TGMM).

    Inputs: two diagnosis prediction frames (:data:`models.evaluation.metrics.PREDICTION_COLUMNS`) over the same test
    patients. Returns one row per metric: value, ci_low, ci_high, n, diff (variant - reference on the test
    patients), diff_low, diff_high (percentile interval of the paired bootstrap differences), p_value and test
    (DeLong for AUC, McNemar for accuracy), n_pairs (bootstrap resamples where both metrics are defined).
    """
    joined = _paired_test_frames(reference, variant)
    label = joined["label"].to_numpy()
    columns = {
        "accuracy": (accuracy_score, joined["pred"].to_numpy(), joined["pred_variant"].to_numpy()),
        "auc": (roc_auc_score, joined["score"].to_numpy(), joined["score_variant"].to_numpy()),
    }
    n = label.size
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, n, size=n) for _ in range(n_resamples)]
    rows = []
    for metric, (fn, ref_estimate, var_estimate) in columns.items():
        ref_stats = np.array([defined_metric(fn, [label[i], ref_estimate[i]]) for i in resamples])
        var_stats = np.array([defined_metric(fn, [label[i], var_estimate[i]]) for i in resamples])
        both = np.isfinite(ref_stats) & np.isfinite(var_stats)
        diff = var_stats[both] - ref_stats[both]
        own = var_stats[np.isfinite(var_stats)]
        quantiles = [alpha / 2, 1 - alpha / 2]
        low, high = np.quantile(own, quantiles) if own.size else (math.nan, math.nan)
        diff_low, diff_high = np.quantile(diff, quantiles) if diff.size else (math.nan, math.nan)
        test = _diagnosis_test(metric, label, ref_estimate, var_estimate, alpha)
        rows.append(
            {
                "metric": metric,
                "value": defined_metric(fn, [label, var_estimate]),
                "ci_low": float(low),
                "ci_high": float(high),
                "sd": None,
                "n": n,
                "diff": defined_metric(fn, [label, var_estimate]) - defined_metric(fn, [label, ref_estimate]),
                "diff_low": float(diff_low),
                "diff_high": float(diff_high),
                "p_value": test.p_value,
                "test": test.name,
                "n_pairs": int(diff.size),
            }
        )
    return rows


def test_to_train_ratio(frame: pl.DataFrame) -> float:
    """Mean n_test / n_train over the (repeat, fold) test sets of a prognosis prediction frame: n_train counts the
    repeat's patients outside the fold (for 2-fold cross-validation about 1)."""
    sizes = frame.group_by("repeat", "fold").len("n_test")
    sizes = sizes.join(frame.group_by("repeat").len("n_repeat"), on="repeat")
    return float((sizes["n_test"] / (sizes["n_repeat"] - sizes["n_test"])).mean())


def paired_prognosis(reference: pl.DataFrame, variant: pl.DataFrame) -> list[dict[str, Any]]:
    """C-index of ``variant`` (mean ± sd over folds) and its fold-paired comparison with ``reference`` (TGMM).

    Inputs: two prognosis prediction frames over the same (repeat, fold) test sets. Folds where either C-index
    is undefined are left out of the pairs. Returns one row (metric ``c_index``): diff = mean per-fold
    difference, diff_low/diff_high its corrected t interval, p_value by the Nadeau-Bengio corrected resampled
    t-test (:func:`models.evaluation.significance.corrected_resampled_t_test`).
    """
    ref = prognosis_fold_frame(reference).select("repeat", "fold", "c_index")
    var = prognosis_fold_frame(variant).select("repeat", "fold", "c_index")
    if set(zip(ref["repeat"], ref["fold"], strict=True)) != set(zip(var["repeat"], var["fold"], strict=True)):
        raise ValueError("TGMM and the variant were not evaluated on the same (repeat, fold) test sets")
    joined = ref.join(var, on=["repeat", "fold"], suffix="_variant").drop_nulls()
    own = var.drop_nulls("c_index")["c_index"].to_numpy()
    diff = joined["c_index_variant"].to_numpy() - joined["c_index"].to_numpy()
    test = corrected_resampled_t_test(diff, test_to_train_ratio(validate_predictions(variant, "prognosis")))
    return [
        {
            "metric": "c_index",
            "value": float(own.mean()) if own.size else math.nan,
            "ci_low": None,
            "ci_high": None,
            "sd": float(own.std(ddof=1)) if own.size > 1 else math.nan,
            "n": int(own.size),
            "diff": test.difference,
            "diff_low": test.low,
            "diff_high": test.high,
            "p_value": test.p_value,
            "test": test.name,
            "n_pairs": int(diff.size),
        }
    ]


def reference_rows(frame: pl.DataFrame, task: str, *, n_resamples: int, seed: int, alpha: float) -> list[dict]:
    """TGMM's own rows (the variant compared with itself: difference 0, p = 1), computed by the same code."""
    rows = (
        paired_diagnosis(frame, frame, n_resamples=n_resamples, seed=seed, alpha=alpha)
        if task == "diagnosis"
        else paired_prognosis(frame, frame)
    )
    return [{**row, "diff": None, "diff_low": None, "diff_high": None, "p_value": None, "test": None} for row in rows]


def compare_results(
    runs: Sequence[Mapping[str, Any]],
    references: Mapping[tuple[str, str], str | Path],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pl.DataFrame:
    """The comparison frame (:data:`COMPARE_COLUMNS`).

    runs: one mapping per variant run {table, variant, task, subset, path} (path: its prediction parquet);
    references: TGMM's prediction parquet per (task, subset). Every (table, task, subset) that a variant ran on
    gets TGMM's row too, so each table is complete on its own.
    """
    rows: list[dict[str, Any]] = []
    seen_reference: set[tuple[str, str, str]] = set()
    for run in runs:
        table, task, subset = run["table"], run["task"], run["subset"]
        reference = pl.read_parquet(references[(task, subset)])
        variant = pl.read_parquet(run["path"])
        key = {"table": table, "task": task, "subset": subset}
        if (table, task, subset) not in seen_reference:
            seen_reference.add((table, task, subset))
            for row in reference_rows(reference, task, n_resamples=n_resamples, seed=seed, alpha=alpha):
                rows.append({**key, "variant": REFERENCE, **row})
        paired = (
            paired_diagnosis(reference, variant, n_resamples=n_resamples, seed=seed, alpha=alpha)
            if task == "diagnosis"
            else paired_prognosis(reference, variant)
        )
        rows.extend({**key, "variant": run["variant"], **row} for row in paired)
    frame = pl.DataFrame(rows, schema=COMPARE_COLUMNS, orient="row") if rows else pl.DataFrame(schema=COMPARE_COLUMNS)
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None))


# ---------------------------------------------------------------------------------------------------
# Tables and figures


def _cell(row: Mapping[str, Any] | None, alpha: float) -> str:
    if row is None or row["value"] is None:
        return "—"
    text = format_cell(row, 3, 2)
    p = row["p_value"]
    if row["variant"] != REFERENCE and p is not None:
        text += "*" if p > alpha else ""
        interval = ""
        if row["diff_low"] is not None and row["diff_high"] is not None:
            interval = f" [{row['diff_low']:+.3f}, {row['diff_high']:+.3f}]"
        text += f" <sub>Δ {row['diff']:+.3f}{interval}, p={p:.2g} ({row['test']})</sub>"
    return text


def compare_markdown(frame: pl.DataFrame, labels: Mapping[str, str], *, alpha: float = 0.05) -> str:
    """COMPARE.md: one table per group (Table 5, Table 6, sweeps); rows = task × metric × model, columns = the
    modality subsets each group ran on. ``labels``: display name per variant."""
    lines = ["# Baselines and ablations against TGMM", ""]
    lines += [
        "Each cell: the model's value with its 95% CI (diagnosis, bootstrap of the test patients) or mean ± sd "
        "over the folds (prognosis C-index); below it the difference from TGMM (Δ, model − TGMM) with its 95% "
        "interval, then the two-sided p-value of the paired test named after it: DeLong's test for two correlated "
        "AUCs and the exact McNemar test for accuracy, on the same test patients (the interval: paired bootstrap "
        "of those patients); for the prognosis C-index the Nadeau–Bengio corrected resampled t-test over the "
        "folds of the repeated cross-validation, which share training patients (the interval: its t interval). "
        f"`*`: no significant difference from TGMM (p > {alpha}), the paper's convention. "
        "models/evaluation/compare.py says why these tests.",
        "",
    ]
    names = {REFERENCE: "TGMM", **labels}
    for table in TABLE_TITLES:
        part = frame.filter(pl.col("table") == table)
        if part.height == 0:
            continue
        subsets = [s for s in SUBSETS if s in set(part["subset"])]
        header = ["Task", "Metric", "Model", *("+".join(DISPLAY[m] for m in s.split("+")) for s in subsets)]
        body = []
        variants = [v for v in dict.fromkeys(part["variant"]) if v != REFERENCE] + [REFERENCE]
        for task in ("diagnosis", "prognosis"):
            for metric in dict.fromkeys(part.filter(pl.col("task") == task)["metric"]):
                for variant in variants:
                    cells = []
                    for subset in subsets:
                        hit = part.filter(task=task, metric=metric, variant=variant, subset=subset)
                        cells.append(_cell(hit.row(0, named=True) if hit.height else None, alpha))
                    if any(c != "—" for c in cells):
                        body.append([task.capitalize(), METRIC_DISPLAY[metric], names.get(variant, variant), *cells])
        lines += [
            f"## {TABLE_TITLES[table]}",
            "",
            markdown_table(header, body, [":--"] * 3 + [":-:"] * len(subsets)),
            "",
        ]
    return "\n".join(lines)


def plot_compare(frame: pl.DataFrame, table: str, labels: Mapping[str, str], path: str | Path) -> Path:
    """Grouped points with CIs (diagnosis AUC) / ± sd (prognosis C-index) per subset, one colour per model."""
    part = frame.filter(pl.col("table") == table)
    panels = [(task, metric) for task, metric in (("diagnosis", "auc"), ("prognosis", "c_index"))]
    panels = [p for p in panels if part.filter(task=p[0], metric=p[1]).height]
    fig = Figure(figsize=(5.0 * max(len(panels), 1), 3.8), layout="constrained")
    names = {REFERENCE: "TGMM", **labels}
    variants = [v for v in dict.fromkeys(part["variant"]) if v != REFERENCE] + [REFERENCE]
    for k, (task, metric) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        rows = part.filter(task=task, metric=metric)
        subsets = [s for s in SUBSETS if s in set(rows["subset"])]
        width = 0.8 / len(variants)
        for j, variant in enumerate(variants):
            for i, subset in enumerate(subsets):
                hit = rows.filter(variant=variant, subset=subset)
                if not hit.height or hit["value"][0] is None:
                    continue
                row = hit.row(0, named=True)
                low = row["ci_low"] if row["ci_low"] is not None else row["value"] - (row["sd"] or 0.0)
                high = row["ci_high"] if row["ci_high"] is not None else row["value"] + (row["sd"] or 0.0)
                x = i - 0.4 + width * (j + 0.5)
                label = names.get(variant, variant) if i == 0 else None
                yerr = [[row["value"] - low], [high - row["value"]]]
                ax.errorbar(x, row["value"], yerr=yerr, fmt="o", color=f"C{j}", label=label, capsize=2)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(subsets)), subsets, rotation=20)
        ax.set_ylabel(METRIC_DISPLAY[metric])
        ax.set_title(f"{task}: {METRIC_DISPLAY[metric]}")
        ax.legend(fontsize=7)
    fig.suptitle(TABLE_TITLES[table])
    return save_figure(fig, path)
