"""How much a result moves with the training seed alone (``snakemake seeds``, ``eval/SEEDS.md``).

The same run (task, modality subset, data, splits, encoder features, every hyperparameter) is trained again with
``train.optim.seed`` replaced; the point metric of each seed is what ``eval/{task}.parquet`` reports for that run:

- **diagnosis**: test-split AUC (``sklearn.metrics.roc_auc_score``) of the predicted probability;
- **prognosis**: C-index mean over the (repeat, fold) test sets (:func:`models.evaluation.metrics.prognosis_metrics`).

On a demo-sized cohort a single early-stopped model can move by several hundredths with its seed; a margin
smaller than the spread across seeds is not a result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import polars as pl
from sklearn.metrics import roc_auc_score

from models.evaluation.metrics import markdown_table, prognosis_metrics, validate_predictions

SEED_COLUMNS = {"task": pl.String, "subset": pl.String, "seed": pl.Int64, "metric": pl.String, "value": pl.Float64}
METRIC_OF_TASK = {"diagnosis": "auc", "prognosis": "c_index"}


def seed_metric(task: str, predictions: pl.DataFrame) -> float:
    """The point metric of one run's predictions (diagnosis: test AUC; prognosis: mean C-index over folds)."""
    frame = validate_predictions(predictions, task)
    if task == "diagnosis":
        test = frame.filter(pl.col("split") == "test")
        return float(roc_auc_score(test["label"].to_numpy(), test["score"].to_numpy()))
    if task == "prognosis":
        return float(prognosis_metrics(frame)[0]["value"])
    raise ValueError(f"seed runs cover diagnosis and prognosis, not {task!r}")


def seed_frame(runs: Mapping[tuple[str, str, int], pl.DataFrame]) -> pl.DataFrame:
    """One row per (task, subset, seed) from the runs' predictions keyed by (task, subset, seed)."""
    rows = [
        {"task": task, "subset": subset, "seed": seed, "metric": METRIC_OF_TASK[task], "value": seed_metric(task, pred)}
        for (task, subset, seed), pred in runs.items()
    ]
    return pl.DataFrame(rows, schema=SEED_COLUMNS).sort("task", "subset", "seed")


def seed_summary(frame: pl.DataFrame) -> pl.DataFrame:
    """Per (task, subset, metric): number of seeds, mean, sample sd, min and max of the per-seed values."""
    return (
        frame.group_by("task", "subset", "metric", maintain_order=True)
        .agg(
            n_seeds=pl.len(),
            mean=pl.col("value").mean(),
            sd=pl.col("value").std(ddof=1),
            min=pl.col("value").min(),
            max=pl.col("value").max(),
        )
        .sort("task", "subset")
    )


def seeds_markdown(frame: pl.DataFrame, reference_seed: int, *, digits: int = 3) -> str:
    """A Markdown table: one row per (task, subset), one column per seed (the reference seed, the one
    ``eval/{task}.parquet`` reports, marked), then mean ± sd and the range."""
    seeds = sorted(frame["seed"].unique().to_list())
    header = ["task", "subset", "metric"]
    header += [f"seed {s}" + (" (reported)" if s == reference_seed else "") for s in seeds]
    header += ["mean ± sd", "range"]
    rows = []
    for summary in seed_summary(frame).iter_rows(named=True):
        values = frame.filter(task=summary["task"], subset=summary["subset"])
        by_seed = dict(zip(values["seed"].to_list(), values["value"].to_list(), strict=True))
        sd = summary["sd"]
        spread = "" if sd is None or math.isnan(sd) else f" ± {sd:.{digits}f}"
        rows.append(
            [summary["task"], f"`{summary['subset']}`", summary["metric"]]
            + [f"{by_seed[s]:.{digits}f}" if s in by_seed else "" for s in seeds]
            + [f"{summary['mean']:.{digits}f}{spread}", f"{summary['min']:.{digits}f}–{summary['max']:.{digits}f}"]
        )
    table = markdown_table(header, rows, [":--"] * 3 + ["--:"] * (len(seeds) + 2))
    lines = [
        "# Training-seed spread",
        "",
        "The same runs trained again with only `train.optim.seed` changed (data, splits, encoder features and every "
        "other hyperparameter unchanged). Diagnosis: test AUC; prognosis: C-index mean over the 10 folds. A difference "
        "between models smaller than this spread is not a finding.",
        "",
        table,
        "",
    ]
    return "\n".join(lines)
