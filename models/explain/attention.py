"""(a) Attention matrices (Fig. 8): mean TGM and MFFM attention per class (models/explain/__init__.py)."""

from __future__ import annotations

import polars as pl
import torch
from torch import Tensor

from models.config import MODALITIES, SLOTS
from models.explain.trained_run import CLASS_COLUMN, TRIMODAL, ExplainedRun
from models.training.data import make_loader
from models.training.experiment import Experiment
from models.training.loop import forward_batch

# --------------------------------------------------------------------------- (a) attention matrices, Fig. 8


@torch.no_grad()
def attention_by_class(run: ExplainedRun, experiment: Experiment, *, batch_size: int = 256) -> pl.DataFrame:
    """Mean TGM and MFFM attention over the run's test patients with all three modalities, per class.

    Returns a long frame: task, label (class), module ("tgm": query slot x key = slot or "prompt" (the P prompt
    tokens summed); "mffm": query modality x key modality of shared slot ``slot``), slot, query, key, weight,
    n (patients averaged).
    """
    data = experiment.data(run.test_ids, TRIMODAL, train=False, stats=run.stats)
    parts: dict[str, list[Tensor]] = {"present": [], "label": [], "tgm": [], "mffm": []}
    for batch in make_loader(data, batch_size, shuffle=False, seed=0):
        outputs = forward_batch(run.model, batch, TRIMODAL, run.task)
        parts["present"].append(batch["present"].bool().all(1))
        parts["label"].append(batch[CLASS_COLUMN[run.task]].long())
        tgm = outputs.attention["tgm"]  # (B, 7, 7 + P): the P prompt tokens summed into one key
        parts["tgm"].append(torch.cat([tgm[:, :, : len(SLOTS)], tgm[:, :, len(SLOTS) :].sum(-1, keepdim=True)], -1))
        parts["mffm"].append(outputs.attention["mffm"])  # (B, 4, 3, 3)
    present, labels, tgm, mffm = (torch.cat(parts[k]) for k in ("present", "label", "tgm", "mffm"))
    shared = [s for s in SLOTS if "+" in s]
    rows = []
    for label in sorted(int(v) for v in labels[present].unique()):
        chosen = present & (labels == label)
        n = int(chosen.sum())
        mean_tgm = tgm[chosen].mean(0)
        for i, query in enumerate(SLOTS):
            for j, key in enumerate([*SLOTS, "prompt"]):
                rows.append((run.task, label, "tgm", "all", query, key, float(mean_tgm[i, j]), n))
        mean_mffm = mffm[chosen].mean(0)
        for s, slot in enumerate(shared):
            for i, query in enumerate(MODALITIES):
                for j, key in enumerate(MODALITIES):
                    rows.append((run.task, label, "mffm", slot, query, key, float(mean_mffm[s, i, j]), n))
    schema = {
        "task": pl.String, "label": pl.Int64, "module": pl.String, "slot": pl.String, "query": pl.String,
        "key": pl.String, "weight": pl.Float64, "n": pl.Int64,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")
