"""The trained trimodal run an explanation reads (models/explain/__init__.py): its model with the frozen
encoders rebuilt, its feature statistics and test patients, the explained score, and raw batches of chosen patients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor

from models.config import MODALITIES
from models.multimodal import MultimodalTGMM
from models.tgmm import TGMMOutput
from models.training.configuration import ModelConfig
from models.training.data import HFTriDataset
from models.training.experiment import prognosis_folds, split_subjects
from models.training.factory import build_model
from models.training.features import FeatureStats
from models.training.loop import load_checkpoint

TRIMODAL = "lab+ecg+echo"
CLASS_COLUMN = {"diagnosis": "label", "prognosis": "event"}


# --------------------------------------------------------------------------- the trained run


@dataclass
class ExplainedRun:
    """A trained trimodal run ready for explanation: ``model`` (eval mode, encoders included), the training split's
    feature statistics (``None`` when the run trained on raw data) and the patients it was tested on."""

    task: str
    model: MultimodalTGMM
    stats: FeatureStats | None
    test_ids: list[int]
    path: Path


def run_dir(work_dir: str | Path, task: str, splits: pl.DataFrame) -> Path:
    """Where ``models.training.experiment`` keeps the first member of the trimodal run: diagnosis ``run/``,
    prognosis the first (repeat, fold)."""
    if task == "diagnosis":
        return Path(work_dir) / "run"
    repeat, fold = prognosis_folds(splits)[0]
    return Path(work_dir) / f"repeat{repeat}_fold{fold}"


def load_run(out_dir: str | Path, model_settings: Mapping[str, Any], work_dir: str | Path, task: str) -> ExplainedRun:
    """The run's ``best.pt`` loaded into a full :class:`MultimodalTGMM` (frozen encoders rebuilt from their
    checkpoints / ``encoder_seed``; the checkpoint's digest of them is checked) with its ``feature_stats.pt``."""
    splits = pl.read_parquet(Path(out_dir) / "hftri/splits.parquet")
    path = run_dir(work_dir, task, splits)
    model = build_model(ModelConfig.from_dict(model_settings))
    load_checkpoint(model, path / "best.pt")
    model.eval()
    stats_path = path / "feature_stats.pt"
    stats = torch.load(stats_path, weights_only=True) if stats_path.is_file() else None
    if task == "diagnosis":
        test_ids = split_subjects(splits, "diagnosis", "test")
    else:
        repeat, fold = prognosis_folds(splits)[0]
        test_ids = split_subjects(splits, "prognosis", "test", repeat, fold)
    return ExplainedRun(task=task, model=model, stats=stats, test_ids=test_ids, path=path)


def task_score(outputs: TGMMOutput, task: str) -> Tensor:
    """(B,) the explained score: log-odds of "heart failure" (diagnosis) or the risk ŷ (prognosis)."""
    if task == "prognosis":
        return outputs.risk.reshape(-1)
    loglik = outputs.loglik
    others = torch.cat([loglik[:, :1], loglik[:, 2:]], dim=1)
    return loglik[:, 1] - torch.logsumexp(others, dim=1)


def _standardise(x: Tensor, stats: FeatureStats | None, name: str) -> Tensor:
    if stats is None:
        return x
    mean, std = stats[name]
    return (x - mean.to(x.device)) / std.to(x.device)


def fused_score(run: ExplainedRun, raw: Mapping[str, Tensor]) -> Tensor:
    """Pre-projection encoder vectors ``raw`` (lab (B, H), ecg (B, W), echo (B, 512); all present) -> (B,) score,
    as the cached-feature path computes it (standardise, project, TGMM)."""
    model = run.model
    projections = {"lab": model.text.proj, "ecg": model.ecg.proj, "echo": model.echo.proj}
    features = torch.stack([projections[m](_standardise(raw[m], run.stats, m)) for m in MODALITIES], dim=1)
    present = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
    return task_score(model.tgmm(features, present, run.task), run.task)


def raw_lab(model: MultimodalTGMM, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    hidden = model.text.hidden_states(input_ids, attention_mask)
    return hidden[:, 0] if model.text.pooling == "cls" else model.text.mean_pool(hidden, attention_mask)


def raw_ecg(model: MultimodalTGMM, ecg: Tensor) -> Tensor:
    crops = model.ecg.transform(ecg, training=False)  # (B, K, 12, 2250)
    b, k = crops.shape[:2]
    return model.ecg.vit(crops.flatten(0, 1)).reshape(b, k, -1).mean(dim=1)


def raw_echo(model: MultimodalTGMM, clips: Tensor, view_present: Tensor) -> Tensor:
    encoded = model.echo(clips, view_present)
    count = view_present.bool().sum(1).clamp_min(1).unsqueeze(1).to(encoded.views.dtype)
    return encoded.views.sum(1) / count


@torch.no_grad()
def raw_vectors(model: MultimodalTGMM, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Pre-projection vectors of a raw batch (see :func:`models.training.features.encode_batch`), without gradients."""
    return {
        "lab": raw_lab(model, batch["input_ids"], batch["attention_mask"]),
        "ecg": raw_ecg(model, batch["ecg"]),
        "echo": raw_echo(model, batch["echo"], batch["view_present"]),
    }


# --------------------------------------------------------------------------- patients


def choose_patients(run: ExplainedRun, out_dir: str | Path, per_class: int) -> pl.DataFrame:
    """Up to ``per_class`` of the run's test patients of each class that have lab text, an ECG and an echo study
    with a view, in subject order. Returns subject_id, label (the task's class: prevalent / incident HF)."""
    data = HFTriDataset(out_dir, run.test_ids, tokenizer=run.model.text.tokenizer, train=False, seed=0)
    column = data.label if run.task == "diagnosis" else data.event
    frame = pl.DataFrame({"subject_id": data.subject_ids, "label": np.asarray(column, dtype=np.int64)})
    frame = frame.filter(pl.Series(data.present.all(1)) & (pl.col("label") >= 0))
    chosen = frame.group_by("label", maintain_order=True).head(per_class)
    return chosen.select("subject_id", "label").sort("label", "subject_id")


def raw_batch(run: ExplainedRun, out_dir: Path, subjects: Sequence[int]) -> dict[str, Tensor]:
    data = HFTriDataset(
        out_dir,
        list(subjects),
        tokenizer=run.model.text.tokenizer,
        max_tokens=run.model.text.max_length,
        train=False,
        seed=0,
    )
    return data.collate_fn([data[i] for i in range(len(data))])
