"""Splits (docs/CURATION.md, Dataset, paper §5.1), deterministic for a seed.

Diagnosis: iterative stratification (iterstrat) into train/validation/test 5:1:1 on prevalent HF and the
other configured stratifiers (one-hot encoded). Prognosis (patients with follow-up): 2-fold stratified
cross-validation on incident HF repeated 5 times; 20% of each training fold, stratified, is validation.

``splits.parquet`` is long: subject_id, task, repeat, fold, split ('train' | 'val' | 'test').
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import polars as pl
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

log = logging.getLogger(__name__)

SPLIT_SCHEMA = {"subject_id": pl.Int64, "task": pl.String, "repeat": pl.Int64, "fold": pl.Int64, "split": pl.String}


def _label_matrix(manifest: pl.DataFrame, stratify: Sequence[str]) -> np.ndarray:
    """Binary columns as they are; other columns one-hot encoded (nulls as their own level)."""
    columns = []
    for name in stratify:
        column = manifest[name]
        if column.dtype == pl.Boolean:
            columns.append(column.fill_null(False).cast(pl.Int8).to_numpy())
        else:
            values = column.cast(pl.String).fill_null("<null>")
            for level in sorted(values.unique().to_list()):
                columns.append((values == level).cast(pl.Int8).to_numpy())
    return np.column_stack(columns)


def diagnosis_split(manifest: pl.DataFrame, stratify: Sequence[str], ratio: Sequence[int], seed: int) -> pl.DataFrame:
    """train/val/test by iterative stratification; ratio e.g. (5, 1, 1)."""
    data = manifest.sort("subject_id")
    labels = _label_matrix(data, stratify)
    total = sum(ratio)
    index = np.arange(data.height)
    outer = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=ratio[2] / total, random_state=seed)
    rest, test = next(outer.split(index, labels))
    inner = MultilabelStratifiedShuffleSplit(
        n_splits=1, test_size=ratio[1] / (ratio[0] + ratio[1]), random_state=seed + 1
    )
    train_pos, val_pos = next(inner.split(rest, labels[rest]))
    split = np.empty(data.height, dtype=object)
    split[rest[train_pos]], split[rest[val_pos]], split[test] = "train", "val", "test"
    return pl.DataFrame(
        {"subject_id": data["subject_id"], "task": "diagnosis", "repeat": 0, "fold": 0, "split": split.tolist()},
        schema=SPLIT_SCHEMA,
    )


def prognosis_splits(manifest: pl.DataFrame, folds: int, repeats: int, validation: float, seed: int) -> pl.DataFrame:
    """Repeated stratified k-fold on incident HF over the follow-up patients, with a stratified
    validation share of each training fold."""
    data = manifest.filter(pl.col("has_followup")).sort("subject_id")
    if data.height == 0:
        return pl.DataFrame(schema=SPLIT_SCHEMA)
    events = data["incident_hf"].fill_null(False).cast(pl.Int8).to_numpy()
    subjects = data["subject_id"].to_numpy()
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    frames = []
    for k, (train, test) in enumerate(cv.split(subjects, events)):
        repeat, fold = divmod(k, folds)
        fit, val = train_test_split(train, test_size=validation, stratify=events[train], random_state=seed + k)
        split = np.empty(len(subjects), dtype=object)
        split[fit], split[val], split[test] = "train", "val", "test"
        frames.append(
            pl.DataFrame(
                {"subject_id": subjects, "task": "prognosis", "repeat": repeat, "fold": fold, "split": split.tolist()},
                schema=SPLIT_SCHEMA,
            )
        )
    return pl.concat(frames)


def make_splits(
    manifest: pl.DataFrame,
    stratify: Sequence[str],
    ratio: Sequence[int],
    folds: int,
    repeats: int,
    validation: float,
    seed: int,
) -> pl.DataFrame:
    splits = pl.concat(
        [diagnosis_split(manifest, stratify, ratio, seed), prognosis_splits(manifest, folds, repeats, validation, seed)]
    )
    counts = splits.group_by("task", "split").len().sort("task", "split").rows()
    log.info("splits: %s", ", ".join(f"{t}/{s}: {n}" for t, s, n in counts))
    return splits.sort("task", "repeat", "fold", "subject_id")
