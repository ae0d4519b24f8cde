"""Frozen-encoder feature caching: encode every patient once per encoder configuration, train on the cache.

With ``unfreeze_layers = 0`` for all three encoders (models/README.md: "0 trains only the projection"), everything
before each encoder's projection is a fixed function of the patient, so it is computed once and stored; training then
runs the three projections + MFFM + TGM + response on the stored vectors (seconds at demo size instead of minutes).

What is cached (per patient, evaluation-mode encoders, the input *to* each trainable projection):

    lab   (N, H)    BERT's last hidden state at [CLS] (``pooling="cls"``) or its masked mean (``"mean"``)
    ecg   (N, W)    the ST-MEM ViT output averaged over the three evaluation crops (0, 125, 250)
    echo  (N, 512)  EchoPrime embeddings averaged over the present views (zeros when none)
    present (N, 3)  the patient has lab text / ECG / echo with at least one view (modality order lab, ecg, echo)
    subject_id (N,)

The projections are affine, so ``proj(cached)`` equals the encoders' own output in evaluation mode (up to float
rounding): :func:`project` maps cached vectors to the (B, 3, D) features TGMM takes.  The fast path loses the
train-time random ECG crop (evaluation crops are averaged in training as well); the raw-data path keeps it.

Cache key: SHA-256 of a JSON description of (a) each encoder's configuration (BERT config, pooling, max_length,
tokenizer vocabulary and case; ``STMEMConfig`` and ``EchoEncoderConfig`` fields other than ``unfreeze_layers``,
``checkpoint`` (the path; the weights are hashed) and ``proj_dim``), (b) a digest of each encoder's state dict
without its projection, and (c) content digests of the inputs table and ``hftri/text.parquet``, plus every file of
every Zarr store the table names unless the table carries each patient's array digest (the workflow's training inputs
view ``train/data/inputs.parquet`` does, and holds no labels: a label criterion never re-encodes).
The file is ``{cache_dir}/features-<key[:24]>.pt`` (+ a ``.json``
with the description); it is written atomically, so concurrent jobs computing the same cache are safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from models.config import MODALITIES, subset_mask
from models.training.data import DatasetFiles, HFTriDataset, make_loader, read_labels

log = logging.getLogger(__name__)

__all__ = [
    "CACHE_FORMAT",
    "FeatureSet",
    "assert_frozen",
    "cache_key",
    "encode_all",
    "encoder_description",
    "feature_dataset",
    "feature_stats",
    "file_digest",
    "load_or_encode",
    "project",
    "save_atomic",
    "state_digest",
]

CACHE_FORMAT = 1
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest, per process
_SKIP_FILES = {".snakemake_timestamp"}


# --------------------------------------------------------------------------- digests and the key


def file_digest(path: str | Path) -> str:
    """BLAKE2b of a file's bytes, or of a directory's files (sorted relative names and contents); memoised per
    process by (path, size, mtime)."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.blake2b(digest_size=32)
        for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name not in _SKIP_FILES):
            h.update(file.relative_to(path).as_posix().encode() + b"\0" + file_digest(file).encode() + b"\n")
        return h.hexdigest()
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.blake2b(digest_size=32)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def state_digest(module: nn.Module, exclude_prefixes: Sequence[str] = ()) -> str:
    """SHA-256 over the sorted (name, dtype, shape, bytes) of a module's state dict, minus excluded prefixes."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if any(name.startswith(p) for p in exclude_prefixes):
            continue
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _config_fields(config: Any, drop: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in drop}


def encoder_description(model: nn.Module) -> dict[str, Any]:
    """What the cached vectors depend on in the encoders of ``model`` (anything with ``text``, ``ecg``, ``echo``)."""
    text, ecg, echo = model.text, model.ecg, model.echo
    bert_config = text.bert.config.to_dict()
    vocab = sorted(text.tokenizer.get_vocab().items())
    return {
        "text": {
            "bert": {k: v for k, v in bert_config.items() if k not in ("_name_or_path", "transformers_version")},
            "pooling": text.pooling,
            "max_length": text.max_length,
            "lowercase": bool(getattr(text.tokenizer, "do_lower_case", False)),
            "vocab": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
            "weights": state_digest(text, ("proj.",)),
        },
        "ecg": {
            "config": _config_fields(ecg.config, ("unfreeze_layers", "checkpoint", "proj_dim")),
            "weights": state_digest(ecg, ("proj.",)),
        },
        "echo": {
            "config": _config_fields(echo.config, ("unfreeze_layers", "checkpoint", "proj_dim")),
            "weights": state_digest(echo, ("proj.",)),
        },
    }


# Columns of the training inputs view that hold a digest of each patient's stored array (hftri_mimic.dataset.manifest).
ARRAY_DIGESTS = ("ecg_signal_sha256", "echo_clips_sha256")


def data_description(source: str | Path | DatasetFiles) -> dict[str, str]:
    """Content digests of what the cache reads: the inputs table (the manifest, or the training inputs view,
    which holds no labels), the lab text, and every referenced Zarr store unless the inputs table carries a
    digest of each patient's array (then the table's digest covers them, and the stores are not re-read)."""
    files = DatasetFiles.of(source)
    inputs = pl.read_parquet(files.inputs)
    described = {"inputs": file_digest(files.inputs), "text": file_digest(files.text)}
    if all(column in inputs.columns for column in ARRAY_DIGESTS):
        return described
    stores = sorted(set(inputs["ecg_zarr"].drop_nulls()) | set(inputs["echo_zarr"].drop_nulls()))
    return described | {name: file_digest(files.root / name) for name in stores}


def cache_key(model: nn.Module, source: str | Path | DatasetFiles) -> tuple[str, dict[str, Any]]:
    """(hex key, description) of the feature cache for ``model``'s encoders over the dataset of ``source`` (an
    out_dir or :class:`models.training.data.DatasetFiles`)."""
    description = {
        "format": CACHE_FORMAT,
        "encoders": encoder_description(model),
        "data": data_description(source),
    }
    blob = json.dumps(description, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), description


# --------------------------------------------------------------------------- encoding


def assert_frozen(model: nn.Module) -> None:
    """Caching is valid only when nothing before a projection trains (``unfreeze_layers == 0`` for all three)."""
    for name in MODALITIES:
        encoder = {"lab": model.text, "ecg": model.ecg, "echo": model.echo}[name]
        proj = {id(p) for p in encoder.proj.parameters()}
        training = [n for n, p in encoder.named_parameters() if p.requires_grad and id(p) not in proj]
        if training:
            raise ValueError(
                f"feature caching needs frozen encoders (unfreeze_layers = 0), but the {name} encoder trains "
                f"{len(training)} tensors before its projection (e.g. {training[0]})"
            )


@torch.no_grad()
def encode_batch(model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Pre-projection vectors of one evaluation batch (see the module docstring); encoders must be in eval mode."""
    text, ecg, echo = model.text, model.ecg, model.echo
    present = batch["present"].bool()
    size = present.shape[0]
    device = present.device
    out = {
        "lab": torch.zeros(size, text.proj.in_features, device=device),
        "ecg": torch.zeros(size, ecg.proj.in_features, device=device),
        "echo": torch.zeros(size, echo.proj.in_features, device=device),
    }
    if present[:, 0].any():
        hidden = text.hidden_states(batch["input_ids"], batch["attention_mask"])
        out["lab"] = hidden[:, 0] if text.pooling == "cls" else text.mean_pool(hidden, batch["attention_mask"])
    if present[:, 1].any():
        crops = ecg.transform(batch["ecg"], training=False)  # (B, K, C, L)
        b, k = crops.shape[:2]
        out["ecg"] = ecg.vit(crops.flatten(0, 1)).reshape(b, k, -1).mean(dim=1)
    if present[:, 2].any():
        encoded = echo(batch["echo"], batch["view_present"])
        count = batch["view_present"].bool().sum(1).clamp_min(1).unsqueeze(1).to(encoded.views.dtype)
        out["echo"] = encoded.views.sum(1) / count
        present = present.clone()
        present[:, 2] &= encoded.present
    for i, name in enumerate(MODALITIES):
        out[name] = out[name].float() * present[:, i, None]
    out["present"] = present
    return out


def encode_all(
    model: nn.Module,
    dataset: HFTriDataset,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Encode every patient of an evaluation-mode ``dataset`` (``train=False``, all three modalities) once.

    model: a :class:`models.multimodal.MultimodalTGMM` (or anything with ``text``, ``ecg``, ``echo``) whose encoders
        are frozen up to their projections (:func:`assert_frozen`).
    Returns CPU tensors: subject_id (N,), lab (N, H), ecg (N, W), echo (N, 512), present (N, 3) bool.
    """
    assert_frozen(model)
    if dataset.train:
        raise ValueError("encode_all needs an evaluation dataset (train=False): cached ECG vectors average 3 crops")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    encoders = [model.text, model.ecg, model.echo]
    modes = [e.training for e in encoders]
    for e in encoders:
        e.to(device).eval()
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0, num_workers=num_workers)
    parts: dict[str, list[Tensor]] = {k: [] for k in ("subject_id", *MODALITIES, "present")}
    try:
        from tqdm.auto import tqdm

        for batch in tqdm(loader, desc="encode", disable=not progress, leave=False):
            moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            encoded = encode_batch(model, moved)
            parts["subject_id"].append(batch["subject_id"])
            for key in (*MODALITIES, "present"):
                parts[key].append(encoded[key].cpu())
    finally:
        for e, mode in zip(encoders, modes, strict=True):
            e.train(mode)
    return {k: torch.cat(v) for k, v in parts.items()}


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a unique temporary file beside ``path``, renamed over it when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_encode(
    model: nn.Module,
    out_dir: str | Path | DatasetFiles,
    cache_dir: str | Path,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Tensor], Path]:
    """The cached vectors of every manifest patient for ``model``'s encoders: loaded from
    ``cache_dir/features-<key>.pt`` when it exists, otherwise encoded (:func:`encode_all`) and saved.
    Returns (features, path)."""
    assert_frozen(model)
    key, description = cache_key(model, out_dir)
    path = Path(cache_dir) / f"features-{key[:24]}.pt"
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("key") == key:
            log.info("feature cache hit: %s", path)
            return {k: v for k, v in cached.items() if k != "key"}, path
        log.warning("feature cache %s holds another key; encoding again", path)
    files = DatasetFiles.of(out_dir)
    subjects = pl.read_parquet(files.inputs, columns=["subject_id"])["subject_id"].sort().to_list()
    dataset = HFTriDataset(
        dataclasses.replace(files, labels=None),
        subjects,
        tokenizer=model.text.tokenizer,
        max_tokens=model.text.max_length,
        train=False,
        seed=0,
        drop_empty=False,
    )
    features = encode_all(
        model, dataset, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress
    )
    save_atomic({**features, "key": key}, path)
    path.with_suffix(".json").write_text(json.dumps({"key": key, **description}, indent=1, sort_keys=True, default=str))
    log.info("feature cache written: %s (%d patients)", path, len(features["subject_id"]))
    return features, path


# --------------------------------------------------------------------------- training on cached vectors


def project(model: nn.Module, batch: Mapping[str, Tensor], subset: str) -> tuple[Tensor, Tensor]:
    """Cached vectors of a batch -> (features (B, 3, D), present (B, 3)) through the encoders' projections, as
    ``MultimodalTGMM.encode`` gives from raw data in evaluation mode (absent modalities are zeros)."""
    allowed = torch.tensor(subset_mask(subset), dtype=torch.bool, device=batch["present"].device)
    present = batch["present"].bool() & allowed
    projections = (model.text.proj, model.ecg.proj, model.echo.proj)
    features = torch.stack(
        [proj(batch[f"feat_{name}"]) for proj, name in zip(projections, MODALITIES, strict=True)], dim=1
    )
    return features * present[..., None].to(features.dtype), present


class FeatureSet(Dataset):
    """Cached vectors and labels of some patients: items are dicts of tensors (``feat_lab``, ``feat_ecg``,
    ``feat_echo``, ``present`` (3,) (masked to ``modalities``), ``subject_id``, ``label``, ``event``, ``time``,
    ``has_followup``), batched by the default collate."""

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        super().__init__()
        sizes = {len(v) for v in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"all tensors need the same length, got {sizes}")
        self.tensors = dict(tensors)
        self.subject_ids = self.tensors["subject_id"].numpy()

    def __len__(self) -> int:
        return len(self.subject_ids)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Tensor]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {k: v[index] for k, v in self.tensors.items()}
        return [batch]

    @property
    def collate_fn(self):
        return _first


def _first(items):
    return items[0]


FeatureStats = dict[str, tuple[Tensor, Tensor]]


def feature_stats(features: Mapping[str, Tensor], subjects: Sequence[int], *, eps: float = 1e-6) -> FeatureStats:
    """Per-dimension mean and standard deviation of each modality's cached vectors over ``subjects`` (the training
    split), counting only patients that have the modality.

    Why: frozen randomly initialised encoders (the demo) give vectors whose between-patient variation is tiny next
    to their common offset (a random BERT's [CLS] varies by ~1e-3 around ~0.8), which a plain ``Linear``
    projection trained by Adafactor barely picks up.  Standardising the frozen features before the trainable
    projection is the usual linear-probe practice (MAE puts a non-affine BatchNorm in front of its probe); with
    statistics from the training split only, no information from validation or test patients leaks in.
    """
    index_of = {int(s): i for i, s in enumerate(features["subject_id"].tolist())}
    rows = torch.tensor([index_of[int(s)] for s in subjects], dtype=torch.long)
    stats: FeatureStats = {}
    for i, name in enumerate(MODALITIES):
        have = features["present"][rows, i].bool()
        x = features[name][rows][have].double()
        if len(x) < 2:
            mean, std = torch.zeros(x.shape[1:]), torch.ones(x.shape[1:])
        else:
            mean, std = x.mean(0), x.std(0).clamp_min(eps)
        stats[name] = (mean.float(), std.float())
    return stats


def feature_dataset(
    features: Mapping[str, Tensor],
    out_dir: str | Path | DatasetFiles,
    subjects: Sequence[int],
    modalities: Sequence[str] = MODALITIES,
    *,
    drop_empty: bool = True,
    stats: FeatureStats | None = None,
) -> FeatureSet:
    """A :class:`FeatureSet` of ``subjects`` (in that order) from :func:`load_or_encode`'s vectors and the
    manifest's labels; ``present`` is masked to ``modalities``, and subjects with none of them are left out when
    ``drop_empty`` (as :class:`models.training.data.HFTriDataset` does).  With ``stats`` (:func:`feature_stats`) each
    present vector is standardised; absent ones stay zero."""
    index_of = {int(s): i for i, s in enumerate(features["subject_id"].tolist())}
    missing = [s for s in subjects if int(s) not in index_of]
    if missing:
        raise ValueError(f"{len(missing)} subjects have no cached features (e.g. {missing[0]})")
    rows = torch.tensor([index_of[int(s)] for s in subjects], dtype=torch.long)
    labels = read_labels(out_dir)
    table = pl.DataFrame({"subject_id": [int(s) for s in subjects]}, schema={"subject_id": pl.Int64}).join(
        labels, on="subject_id", how="left", maintain_order="left"
    )
    allowed = torch.tensor([m in modalities for m in MODALITIES], dtype=torch.bool)
    present = features["present"][rows].bool() & allowed
    keep = present.any(1) if drop_empty else torch.ones(len(rows), dtype=torch.bool)
    vectors = {}
    for i, name in enumerate(MODALITIES):
        x = features[name][rows].float()
        if stats is not None:
            mean, std = stats[name]
            x = torch.where(features["present"][rows, i, None].bool(), (x - mean) / std, torch.zeros_like(x))
        vectors[name] = x
    tensors = {
        "subject_id": torch.tensor(table["subject_id"].to_numpy(), dtype=torch.long),
        "feat_lab": vectors["lab"],
        "feat_ecg": vectors["ecg"],
        "feat_echo": vectors["echo"],
        "present": present,
        "label": torch.tensor(table["label"].to_numpy(), dtype=torch.long),
        "event": torch.tensor(table["event"].to_numpy(), dtype=torch.long),
        "time": torch.tensor(np.asarray(table["time"].to_numpy(), dtype=np.float32)),
        "has_followup": torch.tensor(table["has_followup"].to_numpy(), dtype=torch.bool),
    }
    return FeatureSet({k: v[keep] for k, v in tensors.items()})
