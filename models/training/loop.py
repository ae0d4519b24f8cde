"""Training of TGMM (paper §5.1, docs/MODEL.md): Adafactor, ReduceLROnPlateau, bf16 autocast on GPU, gradient clipping,
early stopping on the validation metric, seeds, best/last checkpoints, a metrics log, resumable runs.

Two kinds of data, one loop (:func:`train`):

- **cached features** (fast path, :class:`models.training.features.FeatureSet` from
  :func:`models.training.features.feature_dataset`):
  frozen encoders (``unfreeze_layers = 0``) were run once; the loop trains the encoders' projections + MFFM + TGM +
  response on the stored vectors.  Seconds per run at demo size.
- **raw data** (:class:`models.training.data.HFTriDataset`): the encoders run every step (their unfrozen layers train).

Validation metric per task (``TrainConfig.metrics``; the ReduceLROnPlateau scheduler and early stopping follow it):

- diagnosis ``auc``: ROC AUC of the log-odds of the "heart failure" answer on the validation patients;
- prognosis ``cindex``: Harrell's C-index (scikit-survival ``concordance_index_censored``) of the risk score ŷ;
- retrieval ``loss``: the validation InfoNCE loss (lower is better).  Recall@1 (``recall@1``, mean over the
  modality directions available) is available but moves in steps of 1/n on a small validation set, which makes
  early stopping erratic; the loss is smooth.
- ``loss`` (the task's validation loss) may be chosen for any task.  When the chosen metric is undefined on the
  validation set (one class only, no comparable pair, no patient with two modalities) the run uses ``loss``
  instead, for all its epochs (the fallback depends only on the data), and logs it.

Resume: ``last.pt`` is written atomically at the end of every epoch with the model (trainable tensors), optimizer,
scheduler, early-stopping counters, the metrics history and every random state (torch CPU/CUDA, numpy, ``random``,
the training loader's generator).  A rerun of :func:`train` with the same arguments continues from it and ends
with the same weights, predictions and metrics log as an uninterrupted run (the ``seconds`` field aside); a
finished run returns at once.  ``best.pt`` holds the best epoch's model.  A ``last.pt`` made with other arguments
(task, subset, config, data, parameter layout) is not resumed: the run starts over.

Checkpoints hold the state dict *without frozen parameters* (the encoders' frozen layers are reproduced from their
checkpoints or seeds; a digest of them is stored and checked on loading) unless ``save_frozen``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import Dataset
from transformers.optimization import Adafactor

from hftri_mimic.common.storage import write_text_atomic
from models.config import MODALITIES, SUBSETS, TASKS
from models.multimodal import MultimodalTGMM
from models.tgmm import TGMMOutput
from models.training.configuration import METRIC_MODES, ModelConfig, TrainConfig
from models.training.data import make_loader
from models.training.factory import build_model
from models.training.features import project, save_atomic

log = logging.getLogger(__name__)

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "forward_batch",
    "load_checkpoint",
    "make_optimizer",
    "pick_device",
    "predict",
    "seed_everything",
    "train",
]

# --------------------------------------------------------------------------- helpers


def seed_everything(seed: int, *, deterministic: bool = True, device: torch.device | None = None) -> None:
    """Seed ``random``, numpy and torch (CPU and CUDA); deterministic kernels where asked (warn-only)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        if device is not None and device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(choice: str = "auto") -> torch.device:
    """'auto': CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no GPU is available")
    return torch.device(choice)


def _use_amp(config: TrainConfig, device: torch.device) -> bool:
    if config.amp == "off" or device.type != "cuda":
        if config.amp == "bf16" and device.type != "cuda":
            log.warning("amp 'bf16' applies on CUDA only; training in float32 on %s", device)
        return False
    return config.amp == "bf16" or torch.cuda.is_bf16_supported()


def _autocast(enabled: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)


def _to(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def forward_batch(model: MultimodalTGMM, batch: Mapping[str, Tensor], subset: str, task: str) -> TGMMOutput:
    """One forward pass: cached vectors (``feat_*`` keys) go through the projections and TGMM, raw data through
    the whole :class:`MultimodalTGMM`."""
    if "feat_lab" in batch:
        features, present = project(model, batch, subset)
        return model.tgmm(features, present, task)
    return model(batch, subset, task)


def _forward_loss(
    model: MultimodalTGMM, batch: Mapping[str, Tensor], subset: str, task: str, amp: bool
) -> tuple[TGMMOutput, Tensor]:
    """One forward pass and the task's total loss, under bf16 autocast when ``amp``."""
    with _autocast(amp):
        outputs = forward_batch(model, batch, subset, task)
        return outputs, model.loss(outputs, batch)["loss"]


def _targets(data: Dataset) -> dict[str, np.ndarray]:
    """Labels of a dataset without reading its signals (HFTriDataset arrays or FeatureSet tensors)."""
    if hasattr(data, "tensors"):
        t = data.tensors
        return {k: t[k].numpy() for k in ("subject_id", "label", "event", "time", "present")}
    return {
        "subject_id": data.subject_ids,
        "label": data.label,
        "event": data.event,
        "time": data.time,
        "present": data.present,
    }


def _check_data(task: str, data: Dataset, what: str) -> None:
    if len(data) == 0:
        raise ValueError(f"{what} data is empty")
    if task == "prognosis" and (_targets(data)["event"] < 0).any():
        raise ValueError(f"{what} data has patients without follow-up; prognosis needs event and time")


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN / inf: a non-finite number is logged as null."""
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- model state in checkpoints


def _frozen_keys(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _frozen_digest(model: nn.Module) -> str:
    keep = _frozen_keys(model)
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in keep:
            t = tensor.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _model_state(model: nn.Module, save_frozen: bool) -> dict[str, Tensor]:
    state = model.state_dict()
    if not save_frozen:
        frozen = _frozen_keys(model)
        state = {k: v for k, v in state.items() if k not in frozen}
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _load_model_state(model: nn.Module, state: Mapping[str, Tensor], frozen_digest: str | None, path: Path) -> None:
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    frozen = _frozen_keys(model)
    bad = sorted(set(missing) - frozen)
    if bad or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit the model; missing {bad[:8]}, unexpected {unexpected[:8]}")
    if missing and frozen_digest is not None and _frozen_digest(model) != frozen_digest:
        raise ValueError(
            f"{path}: the model's frozen encoder weights differ from those the checkpoint was trained with "
            "(build the encoders from the same checkpoints / encoder_seed)"
        )


def load_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load ``best.pt`` / ``last.pt`` weights into ``model`` (checking frozen weights); returns the checkpoint."""
    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    _load_model_state(model, checkpoint["model"], checkpoint.get("frozen_digest"), path)
    return checkpoint


# --------------------------------------------------------------------------- random states


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": _python_state_to_tensor(random.getstate()),
        "loader": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state_to_tensor(state) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss"]))
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- evaluation pass


@torch.no_grad()
def _collect(
    model: MultimodalTGMM, data: Dataset, task: str, subset: str, device: torch.device, batch_size: int, amp: bool
) -> dict[str, Any]:
    """Outputs over ``data`` in order (eval mode): subject ids, loglik / risk / embeddings, mean loss."""
    model.eval()
    loader = make_loader(data, batch_size, shuffle=False, seed=0, num_workers=0)
    out: dict[str, list] = {"subject_id": [], "loglik": [], "risk": [], "embeddings": [], "mask": []}
    total, count = 0.0, 0
    for batch in loader:
        batch = _to(batch, device)
        outputs, loss = _forward_loss(model, batch, subset, task, amp)
        size = len(batch["subject_id"])
        total += float(loss) * size
        count += size
        out["subject_id"].append(batch["subject_id"].cpu())
        if task == "retrieval":
            out["embeddings"].append(outputs.embeddings.float().cpu())
            out["mask"].append(outputs.embedding_mask.cpu())
        else:
            out["loglik"].append(outputs.loglik.float().cpu())
            if task == "prognosis":
                out["risk"].append(outputs.risk.float().cpu())
    result = {k: torch.cat(v).numpy() for k, v in out.items() if v}
    result["loss"] = total / max(count, 1)
    return result


def _log_odds(loglik: np.ndarray, index: int) -> np.ndarray:
    others = np.delete(loglik, index, axis=1)
    top = others.max(1, keepdims=True)
    return loglik[:, index] - (top[:, 0] + np.log(np.exp(others - top).sum(1)))


def _recall_at_1(embeddings: np.ndarray, mask: np.ndarray) -> float | None:
    values = []
    for a in range(len(MODALITIES)):
        for b in range(len(MODALITIES)):
            both = mask[:, a] & mask[:, b]
            if a == b or both.sum() < 2:
                continue
            sim = embeddings[both, a] @ embeddings[both, b].T
            values.append(float((sim.argmax(1) == np.arange(len(sim))).mean()))
    return float(np.mean(values)) if values else None


def _metric_defined(task: str, name: str, targets: Mapping[str, np.ndarray], subset: str) -> bool:
    if name == "loss":
        return True
    if name == "auc":
        return len(np.unique(targets["label"])) == 2
    if name == "cindex":
        event, time = targets["event"].astype(bool), targets["time"]
        return bool((time[event][:, None] < time[None, :]).any()) if event.any() else False
    if name == "recall@1":
        from models.config import subset_mask

        present = targets["present"] & np.array(subset_mask(subset))[None]
        return any(
            (present[:, a] & present[:, b]).sum() >= 2
            for a in range(len(MODALITIES))
            for b in range(a + 1, len(MODALITIES))
        )
    raise ValueError(name)


def _metric_value(task: str, name: str, collected: Mapping[str, Any], targets: Mapping[str, np.ndarray], cfg) -> float:
    if name == "loss":
        return float(collected["loss"])
    if name == "auc":
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(targets["label"], _log_odds(collected["loglik"], 1)))
    if name == "cindex":
        from sksurv.metrics import concordance_index_censored

        return float(concordance_index_censored(targets["event"].astype(bool), targets["time"], collected["risk"])[0])
    value = _recall_at_1(collected["embeddings"], collected["mask"])
    return float("nan") if value is None else value


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train` did. ``model`` holds the best epoch's weights, in eval mode."""

    task: str
    subset: str
    metric: str  # the validation metric actually used (after a fallback to "loss")
    best_metric: float
    best_epoch: int  # 0-based
    epochs_run: int
    stopped_early: bool
    resumed: bool
    seconds: float
    best_path: Path
    last_path: Path
    log_path: Path
    model: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "model"}
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def _fingerprint(
    task: str, subset: str, config: TrainConfig, model: nn.Module, train_data: Dataset, val_data: Dataset
) -> str:
    """What a resumable last.pt must agree on: arguments, data order and the parameter layout."""
    layout = [(n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()]
    description = {
        "task": task,
        "subset": subset,
        "config": {k: v for k, v in config.to_dict().items() if k not in ("progress", "num_workers", "threads")},
        "layout": layout,
        "train": _targets(train_data)["subject_id"].tolist(),
        "val": _targets(val_data)["subject_id"].tolist(),
        "kind": [type(train_data).__name__, type(val_data).__name__],
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def train(
    task: str,
    subset: str,
    model_or_factory: nn.Module | Callable[[], nn.Module],
    train_data: Dataset,
    val_data: Dataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``task`` on modality ``subset`` and keep the best epoch by the validation metric.

    model_or_factory: a :class:`MultimodalTGMM`, or a callable building one (called after seeding, so its
        initialisation follows ``config.seed``).
    train_data / val_data: :class:`models.training.features.FeatureSet` (cached features) or
        :class:`models.training.data.HFTriDataset` (``train=True`` for training, ``train=False`` for validation).
    out_dir: gets ``best.pt``, ``last.pt``, ``metrics.jsonl`` (one JSON line per epoch: epoch, train_loss,
        val_loss, metric name and value, lr, best, seconds) and ``result.json``.
    on_epoch_end(epoch, record): called after the epoch's checkpoint is written (tests raise here to simulate a
        killed run).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if subset not in SUBSETS:
        raise ValueError(f"unknown modality subset {subset!r}; expected one of {SUBSETS}")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_data(task, train_data, "training")
    _check_data(task, val_data, "validation")
    if config.threads:
        torch.set_num_threads(config.threads)

    device = pick_device(config.device)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        seed_everything(config.seed, deterministic=config.deterministic, device=device)
        return _train(task, subset, model_or_factory, train_data, val_data, config, out, device, on_epoch_end, started)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> Adafactor:
    """Adafactor with an explicit step size (§5.1), over the trainable parameters."""
    return Adafactor(
        params,
        lr=config.lr,
        eps=tuple(config.adafactor_eps),
        clip_threshold=config.adafactor_clip_threshold,
        decay_rate=config.adafactor_decay_rate,
        beta1=config.adafactor_beta1,
        weight_decay=config.weight_decay,
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
    )


def _train(task, subset, model_or_factory, train_data, val_data, config, out, device, on_epoch_end, started):
    best_path, last_path, log_path = out / "best.pt", out / "last.pt", out / "metrics.jsonl"
    model = model_or_factory if isinstance(model_or_factory, nn.Module) else model_or_factory()
    model.to(device)
    amp = _use_amp(config, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    val_targets = _targets(val_data)
    metric = config.metrics.get(task, "loss")
    if not _metric_defined(task, metric, val_targets, subset):
        log.warning("%s/%s: validation %r is undefined on the validation set; using the loss", task, subset, metric)
        metric = "loss"
    mode = METRIC_MODES[metric]
    scheduler = ReduceLROnPlateau(
        optimizer,
        mode=mode,
        factor=config.scheduler_factor,
        patience=config.scheduler_patience,
        threshold=config.min_delta,
        threshold_mode="abs",
        min_lr=config.scheduler_min_lr,
    )
    workers = config.num_workers if not hasattr(train_data, "tensors") else 0
    generator = torch.Generator()
    generator.manual_seed(config.seed)
    loader = make_loader(
        train_data, config.batch_size, shuffle=True, seed=config.seed, num_workers=workers,
        drop_last=config.drop_last, generator=generator,
    )  # fmt: skip
    fingerprint = _fingerprint(task, subset, config, model, train_data, val_data)
    frozen_digest = None if config.save_frozen else _frozen_digest(model)

    state = {"epoch": 0, "best": None, "best_epoch": -1, "bad_epochs": 0, "history": [], "finished": False}
    resumed = False
    if last_path.is_file():
        checkpoint = torch.load(last_path, map_location="cpu", weights_only=True)
        if checkpoint.get("fingerprint") == fingerprint:
            _load_model_state(model, checkpoint["model"], checkpoint.get("frozen_digest"), last_path)
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            _set_rng_state(checkpoint["rng"], generator)
            state = {k: checkpoint[k] for k in state}
            resumed = True
            log.info("%s/%s: resuming after epoch %d from %s", task, subset, state["epoch"], last_path)
        else:
            log.warning("%s: made with other arguments; training from scratch", last_path)
    if not resumed:
        best_path.unlink(missing_ok=True)
    # the log holds exactly the checkpointed epochs (a kill after a log line but before last.pt drops that line)
    write_text_atomic("".join(json.dumps(r) + "\n" for r in state["history"]), log_path)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=config.epochs, initial=state["epoch"], desc=f"{task}/{subset}", disable=not config.progress, leave=False
    )
    stopped_early = state["finished"] and state["bad_epochs"] >= config.patience
    try:
        while not state["finished"] and state["epoch"] < config.epochs:
            epoch = state["epoch"]
            tick = time.perf_counter()
            if hasattr(train_data, "set_epoch"):
                train_data.set_epoch(epoch)
            model.train()
            total, count = 0.0, 0
            for batch in loader:
                batch = _to(batch, device)
                _, loss = _forward_loss(model, batch, subset, task, amp)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                size = len(batch["subject_id"])
                total += float(loss.detach()) * size
                count += size
            collected = _collect(model, val_data, task, subset, device, config.eval_batch_size, amp)
            value = _metric_value(task, metric, collected, val_targets, config)
            lr = float(optimizer.param_groups[0]["lr"])
            scheduler.step(value)
            best = state["best"]
            improved = math.isfinite(value) and (
                best is None or (value > best + config.min_delta if mode == "max" else value < best - config.min_delta)
            )
            if improved:
                state.update(best=value, best_epoch=epoch, bad_epochs=0)
                save_atomic(
                    {
                        "model": _model_state(model, config.save_frozen),
                        "frozen_digest": frozen_digest,
                        "epoch": epoch,
                        "metric": metric,
                        "value": value,
                        "task": task,
                        "subset": subset,
                    },
                    best_path,
                )
            else:
                state["bad_epochs"] += 1
            record = {
                "epoch": epoch,
                "train_loss": _finite_or_none(total / max(count, 1)),
                "val_loss": _finite_or_none(collected["loss"]),
                "metric": metric,
                "value": _finite_or_none(value),
                "lr": lr,
                "best": improved,
                "seconds": round(time.perf_counter() - tick, 4),
            }
            state["history"].append(record)
            state["epoch"] = epoch + 1
            stopped_early = state["bad_epochs"] >= config.patience
            state["finished"] = stopped_early or state["epoch"] >= config.epochs
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            save_atomic(
                {
                    "model": _model_state(model, config.save_frozen),
                    "frozen_digest": frozen_digest,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(generator),
                    "fingerprint": fingerprint,
                    **state,
                },
                last_path,
            )
            bar.update(1)
            bar.set_postfix({"train_loss": f"{record['train_loss']:.4f}", f"val_{metric}": f"{value:.4f}"})
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
    finally:
        bar.close()

    if not best_path.is_file():
        raise RuntimeError(f"{task}/{subset}: no epoch gave a finite validation {metric}; see {log_path}")
    load_checkpoint(model, best_path)
    model.eval()
    result = TrainResult(
        task=task,
        subset=subset,
        metric=metric,
        best_metric=float(state["best"]),
        best_epoch=int(state["best_epoch"]),
        epochs_run=int(state["epoch"]),
        stopped_early=bool(stopped_early),
        resumed=resumed,
        seconds=time.perf_counter() - started,
        best_path=best_path,
        last_path=last_path,
        log_path=log_path,
        model=model,
    )
    write_text_atomic(json.dumps(result.to_dict(), indent=1) + "\n", out / "result.json")
    log.info(
        "%s/%s: best %s %.4f at epoch %d of %d (%.1f s)",
        task, subset, metric, result.best_metric, result.best_epoch, result.epochs_run, result.seconds,
    )  # fmt: skip
    return result


# --------------------------------------------------------------------------- prediction


def predict(
    task: str,
    subset: str,
    model: MultimodalTGMM,
    data: Dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> pl.DataFrame:
    """Per-patient predictions in evaluation mode (float32), in ``data``'s order.

    diagnosis: subject_id, label (prevalent_hf), score (softmax probability of the "heart failure" answer over the
        candidates' log-likelihoods), logodds (its log-odds), pred (most likely candidate index)
    prognosis: subject_id, event, time, risk (ŷ, Eq. 14-15), score (probability of "high risk"), pred
    retrieval: subject_id, has_lab / has_ecg / has_echo (used in this subset), emb_lab / emb_ecg / emb_echo
        (L2-normalised retrieval embeddings, null where absent)
    """
    device = pick_device("auto") if device is None else torch.device(device)
    model.to(device)
    collected = _collect(model, data, task, subset, device, batch_size, amp=False)
    targets = _targets(data)
    ids = collected["subject_id"].astype(np.int64)
    if task == "retrieval":
        emb, mask = collected["embeddings"], collected["mask"].astype(bool)
        columns: dict[str, Any] = {"subject_id": ids}
        for i, name in enumerate(MODALITIES):
            columns[f"has_{name}"] = mask[:, i]
        for i, name in enumerate(MODALITIES):
            columns[f"emb_{name}"] = pl.Series(
                f"emb_{name}", [emb[j, i].tolist() if mask[j, i] else None for j in range(len(ids))],
                dtype=pl.List(pl.Float32),
            )  # fmt: skip
        return pl.DataFrame(columns)
    loglik = collected["loglik"]
    shifted = loglik - loglik.max(1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    if task == "diagnosis":
        return pl.DataFrame(
            {
                "subject_id": ids,
                "label": targets["label"].astype(np.int64),
                "score": probs[:, 1].astype(np.float64),
                "logodds": _log_odds(loglik, 1).astype(np.float64),
                "pred": loglik.argmax(1).astype(np.int64),
            }
        )
    high = model.tgmm.config.high_risk_index
    return pl.DataFrame(
        {
            "subject_id": ids,
            "event": targets["event"].astype(np.int64),
            "time": targets["time"].astype(np.float64),
            "risk": collected["risk"].astype(np.float64),
            "score": probs[:, high].astype(np.float64),
            "pred": loglik.argmax(1).astype(np.int64),
        }
    )
