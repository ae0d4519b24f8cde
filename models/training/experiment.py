"""One experiment = one task on one modality subset, trained and predicted on the dataset's splits (docs/MODEL.md).

This is what the workflow's training rules call (``workflow/scripts/train_model.py``):

- **diagnosis** (:func:`run_diagnosis`): train on ``split == "train"`` of ``hftri/splits.parquet`` (task
  ``diagnosis``), early-stop on ``val``, predict every patient of the three splits. Predictions: subject_id, split,
  label (prevalent HF), score (probability of the "heart failure" answer, averaged over the ensemble), pred
  (score >= the threshold most accurate on the validation split, :func:`accuracy_threshold`).
- **prognosis** (:func:`run_prognosis`): for every (repeat, fold) of the repeated 2-fold cross-validation, train on
  that fold's ``train``, early-stop on its ``val`` and predict its ``test`` patients. Predictions: subject_id,
  repeat, fold, time, event, risk (ŷ of Eq. 14-15; higher = earlier heart failure expected).
- **retrieval** (:func:`run_retrieval`): train InfoNCE (Eq. 16) on the diagnosis ``train`` split (early-stopped on
  ``val``) and embed the ``test`` patients; the candidate pool (``"test"`` or ``"all"``, see
  :func:`models.evaluation.metrics.retrieval_directions`) gives one per-query frame per direction.

Data: with all encoders frozen up to their projections (``ModelConfig.frozen``) the runs read the cached encoder
vectors (:mod:`models.training.features`, computed once by the ``encoder_features`` rule); otherwise the raw records
(:class:`models.training.data.HFTriDataset`, train-time random ECG crop) so that the unfrozen layers train.

Every run keeps its checkpoints under ``work_dir/<run>/`` (``best.pt``, ``last.pt``, ``metrics.jsonl``,
``result.json``): a killed job that is started again resumes from ``last.pt`` and ends with the same predictions
as an uninterrupted one (:func:`models.training.loop.train`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from sklearn.metrics import roc_curve
from torch.utils.data import Dataset

from hftri_mimic.common.storage import write_text_atomic
from models.config import DIRECTIONS, MODALITIES, SUBSETS, TASKS, direction_name, subset_mask
from models.encoders.text import load_wordpiece_tokenizer
from models.evaluation.metrics import direction_similarities, retrieval_predictions
from models.training.configuration import ModelConfig, TrainConfig
from models.training.data import DatasetFiles, HFTriDataset
from models.training.factory import build_model
from models.training.features import FeatureStats, feature_dataset, feature_stats, save_atomic
from models.training.loop import TrainResult, predict, train

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ("subject_id", "task", "repeat", "fold", "split")  # of hftri/splits.parquet and the task views

__all__ = [
    "Experiment",
    "accuracy_threshold",
    "prognosis_folds",
    "run_diagnosis",
    "run_prognosis",
    "run_retrieval",
    "split_subjects",
    "write_summary",
]


def split_subjects(splits: pl.DataFrame, task: str, split: str, repeat: int = 0, fold: int = 0) -> list[int]:
    """Patients of one split (``train`` / ``val`` / ``test``) of ``hftri/splits.parquet``, in subject order."""
    chosen = splits.filter(task=task, split=split, repeat=repeat, fold=fold)
    ids = chosen["subject_id"].sort().to_list()
    if not ids:
        raise ValueError(f"no {task} patients in split {split!r} (repeat {repeat}, fold {fold})")
    return ids


@dataclass
class Experiment:
    """What every run of a workflow shares: the dataset, the configurations and where runs keep checkpoints.

    out_dir: the workflow's ``out_dir`` (``hftri/`` inside), or the :class:`models.training.data.DatasetFiles` to read
    (the
        workflow passes a task's training view).
    features: the cached encoder vectors (:func:`models.training.features.load_or_encode`), or None to read raw records.
    work_dir: runs write ``work_dir/<run name>/``.
    """

    out_dir: Path | DatasetFiles
    model_config: ModelConfig
    train_config: TrainConfig
    work_dir: Path
    features: Mapping[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        self.files = DatasetFiles.of(self.out_dir)
        self.out_dir = self.files.root
        self.work_dir = Path(self.work_dir)
        self.splits = pl.read_parquet(self.files.splits, columns=list(SPLIT_COLUMNS))
        if self.features is None and self.model_config.frozen:
            log.info("all encoders are frozen but no cached features were given: encoding on the fly")
        self._tokenizer = None
        self._stats: dict[str, FeatureStats | None] = {}

    @classmethod
    def from_settings(
        cls,
        out_dir: str | Path | DatasetFiles,
        model: Mapping[str, Any],
        optim: Mapping[str, Any],
        work_dir: str | Path,
        *,
        threads: int,
        features_path: str | Path | None = None,
    ) -> Experiment:
        """An experiment from the workflow's config values (``model`` and ``train.optim`` blocks), with the cached
        encoder features read from ``features_path`` when given."""
        return cls(
            out_dir=out_dir if isinstance(out_dir, DatasetFiles) else Path(out_dir),
            model_config=ModelConfig.from_dict(model),
            train_config=TrainConfig.from_dict({**optim, "threads": threads}),
            work_dir=Path(work_dir),
            features=torch.load(features_path, weights_only=True) if features_path else None,
        )

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = build_model_tokenizer(self.model_config)
        return self._tokenizer

    def data(self, subjects: Sequence[int], subset: str, *, train: bool, stats: FeatureStats | None = None) -> Dataset:
        """The patients' items restricted to ``subset``'s modalities (patients with none of them left out);
        cached vectors are standardised with ``stats`` (from the run's training split)."""
        modalities = [m for m, used in zip(MODALITIES, subset_mask(subset), strict=True) if used]
        if self.features is not None:
            return feature_dataset(self.features, self.files, subjects, modalities, stats=stats)
        return HFTriDataset(
            self.files,
            subjects,
            tokenizer=self.tokenizer if "lab" in modalities else None,
            max_tokens=self.model_config.text.max_length,
            train=train,
            seed=self.train_config.seed,
            modalities=modalities,
        )

    def fit(
        self, task: str, subset: str, name: str, train_ids: Sequence[int], val_ids: Sequence[int]
    ) -> list[TrainResult]:
        """Train one run (or resume it) and return its members' results with their best epochs' models.

        A run is ``train_config.ensemble[task]`` models (default 1) trained with seeds ``seed``, ``seed + 1``, ...
        (checkpoints under ``name/`` for the first, ``name/member{k}/`` for the others).  Cached vectors are
        standardised with the training split's statistics (:func:`models.training.features.feature_stats`), saved as
        ``feature_stats.pt`` beside the first member's checkpoints and used again for prediction."""
        stats = None
        if self.features is not None:
            stats = feature_stats(self.features, train_ids)
            save_atomic(stats, self.work_dir / name / "feature_stats.pt")
        self._stats[name] = stats
        train_data = self.data(train_ids, subset, train=True, stats=stats)
        val_data = self.data(val_ids, subset, train=False, stats=stats)
        members = self.train_config.ensemble.get(task, 1)
        results = []
        for k in range(members):
            config = dataclasses.replace(self.train_config, seed=self.train_config.seed + k)
            member_dir = self.work_dir / name if k == 0 else self.work_dir / name / f"member{k}"
            build = lambda: build_model(self.model_config)  # noqa: E731
            results.append(train(task, subset, build, train_data, val_data, config, member_dir))
        return results

    def predict(
        self, task: str, subset: str, run: str, results: Sequence[TrainResult], subjects: Sequence[int]
    ) -> pl.DataFrame:
        """Predictions of run ``run``'s best models for ``subjects`` (standardised like their training data), averaged
        over the ensemble's members: diagnosis probability and log-odds, prognosis risk and probability.  An
        ensemble's frame has no ``pred``: the callers decide (diagnosis: :func:`accuracy_threshold`).  Retrieval
        embeddings come from the first member."""
        data = self.data(subjects, subset, train=False, stats=self._stats.get(run))
        frames = [predict(task, subset, r.model, data, batch_size=self.train_config.eval_batch_size) for r in results]
        if len(frames) == 1 or task == "retrieval":
            return frames[0]
        averaged = [c for c in ("score", "logodds", "risk") if c in frames[0].columns]
        mean = {c: np.mean([f[c].to_numpy() for f in frames], axis=0) for c in averaged}
        return frames[0].drop("pred").with_columns(pl.Series(c, values) for c, values in mean.items())


def build_model_tokenizer(model_config: ModelConfig):
    """The text encoder's WordPiece tokenizer without building the encoders (for raw-data datasets)."""
    text = model_config.text
    return load_wordpiece_tokenizer(text.folder or text.vocab, lowercase=text.lowercase, max_length=text.max_length)


def _check_subset(task: str, subset: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if subset not in SUBSETS:
        raise ValueError(f"unknown modality subset {subset!r}; expected one of {SUBSETS}")


def _summary(results: Sequence[TrainResult], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"runs": [r.to_dict() for r in results], **(extra or {})}


def run_diagnosis(experiment: Experiment, subset: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Train on the diagnosis train split and predict train, val and test. Returns (predictions, summary)."""
    _check_subset("diagnosis", subset)
    ids = {split: split_subjects(experiment.splits, "diagnosis", split) for split in ("train", "val", "test")}
    results = experiment.fit("diagnosis", subset, "run", ids["train"], ids["val"])
    frames = []
    for split, subjects in ids.items():
        predicted = experiment.predict("diagnosis", subset, "run", results, subjects)
        frames.append(predicted.with_columns(split=pl.lit(split)))
    predictions = pl.concat(frames)
    validation = predictions.filter(split="val")
    threshold = accuracy_threshold(validation["score"].to_numpy(), validation["label"].to_numpy())
    predictions = predictions.with_columns(pred=(pl.col("score") >= threshold).cast(pl.Int64))
    predictions = predictions.select("subject_id", "split", "label", "score", "pred")
    return predictions, _summary(results, {"threshold": threshold})


def accuracy_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The decision threshold on ``scores`` (pred = score >= threshold) with the highest accuracy on these
    (validation) patients; among equally accurate thresholds the middle one.

    The answer probabilities of an early-stopped TGMM rank patients well but are often shifted (the answer
    texts' language-model and unlikelihood terms move both candidates' log-likelihoods), so a fixed 0.5 can put
    every patient in one class; choosing the threshold on the validation split keeps the test split untouched.
    With one class only in ``scores``' labels the threshold is 0.5."""
    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores)
    positives = labels.sum()
    accuracy = (tpr * positives + (1 - fpr) * (len(labels) - positives)) / len(labels)
    best = np.flatnonzero(np.isclose(accuracy, accuracy.max()))
    return float(min(thresholds[best[len(best) // 2]], 1.0))


def prognosis_folds(splits: pl.DataFrame) -> list[tuple[int, int]]:
    """The (repeat, fold) pairs of the prognosis cross-validation, in order."""
    folds = splits.filter(pl.col("task") == "prognosis").select("repeat", "fold").unique().sort("repeat", "fold")
    if folds.height == 0:
        raise ValueError("hftri/splits.parquet has no prognosis folds (no patient with follow-up?)")
    return [tuple(row) for row in folds.iter_rows()]


def run_prognosis(experiment: Experiment, subset: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Train and test on every (repeat, fold); predictions of each fold's test patients. Returns
    (predictions, summary)."""
    _check_subset("prognosis", subset)
    frames, results = [], []
    for repeat, fold in prognosis_folds(experiment.splits):
        ids = {
            split: split_subjects(experiment.splits, "prognosis", split, repeat, fold)
            for split in ("train", "val", "test")
        }
        run = f"repeat{repeat}_fold{fold}"
        members = experiment.fit("prognosis", subset, run, ids["train"], ids["val"])
        results.extend(members)
        predicted = experiment.predict("prognosis", subset, run, members, ids["test"])
        frames.append(
            predicted.select(
                "subject_id",
                pl.lit(repeat, pl.Int64).alias("repeat"),
                pl.lit(fold, pl.Int64).alias("fold"),
                "time",
                pl.col("event").cast(pl.Boolean),
                "risk",
            )
        )
    return pl.concat(frames), _summary(results)


def run_retrieval(
    experiment: Experiment, subset: str = "lab+ecg+echo", pool: Literal["test", "all"] = "test"
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, dict[str, Any]]:
    """Train InfoNCE on the diagnosis train split and rank the test patients' modalities against each other.

    Queries are the test patients that have both modalities of a direction (and both are in ``subset``); with
    ``pool="test"`` the candidates are the same patients, with ``pool="all"`` every patient of the three splits
    that has the candidate modality (more distractors). Returns (per-direction query frames keyed by direction
    name, the embeddings of every patient (subject_id, split, emb_lab / emb_ecg / emb_echo), summary).
    """
    _check_subset("retrieval", subset)
    if sum(subset_mask(subset)) < 2:
        raise ValueError(f"retrieval needs at least two modalities, got subset {subset!r}")
    ids = {split: split_subjects(experiment.splits, "diagnosis", split) for split in ("train", "val", "test")}
    results = experiment.fit("retrieval", subset, "run", ids["train"], ids["val"])
    embeddings = pl.concat(
        [
            experiment.predict("retrieval", subset, "run", results, subjects).with_columns(split=pl.lit(split))
            for split, subjects in ids.items()
        ]
    )
    keep = ["subject_id", "split", *(f"emb_{m}" for m in MODALITIES)]
    similarities = direction_similarities(embeddings.select(keep), pool)
    directions = {name: retrieval_predictions(sim, ids) for name, (sim, ids) in similarities.items()}
    used = [m for m, on in zip(MODALITIES, subset_mask(subset), strict=True) if on]
    for query, candidate in DIRECTIONS:
        if query in used and candidate in used and direction_name(query, candidate) not in directions:
            log.warning("retrieval %s: fewer than two test patients with both modalities", (query, candidate))
    return directions, embeddings.select(keep), _summary(results, {"pool": pool})


def write_summary(summary: Mapping[str, Any], path: str | Path) -> Path:
    write_text_atomic(json.dumps(summary, indent=1, default=str) + "\n", path)
    return Path(path)
