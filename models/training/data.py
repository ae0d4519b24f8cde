"""PyTorch access to the HFTri-MIMIC dataset (``{out_dir}/hftri/``): manifest + lab text + ECG/echo Zarr stores.

One item is one patient, as a dict whose keys are those of :class:`models.multimodal.MultimodalTGMM`'s batch::

    subject_id ()  int64
    input_ids (L,) int64         lab text tokens [CLS] ... [SEP] (only when "lab" is in ``modalities``);
                                 :func:`collate` pads them and adds attention_mask (B, L)
    ecg (12, T) float32          T = 2500 (stored record) in evaluation, T = ``ecg_crop`` (2250) in training
    echo (11, F, S, S, 3) uint8, view_present (11,) bool
    present (3,) bool            lab, ecg, echo: the patient has it AND it is one of ``modalities``
    label ()  int64              prevalent_hf (diagnosis)
    event ()  int64              incident_hf (prognosis), -1 where the patient has no follow-up
    time ()   float32            followup_days, NaN where the patient has no follow-up
    has_followup () bool

Only the keys of the requested ``modalities`` are returned (``ecg`` is absent for ``modalities=("lab",)``). A patient
lacking a requested modality gets zeros there and ``present`` False.

Decisions (see ``models/README.md``, "Training"):

- **Lab presence**: the lab modality is the patient's lab *text* (labs, demographics, history, drugs; paper §4.2.1),
  so it is present when ``text.parquet`` holds a non-empty text for the patient (``require_lab_values=True`` asks
  for ``has_lab`` as well, i.e. at least one lab value).
- **Patients with nothing to show**: with ``drop_empty=True`` (default) a subject with none of the requested
  modalities is left out (TGMM needs at least one); ``dataset.dropped`` lists them.
- **Train-time ECG crop** (ST-MEM's ``random_crop(2250)``, docs/SIGNALS.md, ECG) happens *here*, not in the
  encoder: the start is drawn from ``numpy.random.SeedSequence([seed, epoch, subject_id])``, so it differs between
  epochs and is the same for the same (seed, epoch, patient) in any worker, order or rerun
  (:meth:`HFTriDataset.set_epoch`).  The ST-MEM encoder takes a 2250-sample input whole (train or eval) and
  standardises it; in evaluation the dataset returns the full 2500-sample record and the encoder averages its three
  crops.
- **Zarr stores** are opened lazily, once per process, on first access (never in ``__init__``): the dataset pickles
  for spawn-context DataLoader workers, and each worker opens its own read-only handles.
- **Tokenisation** happens once in ``__init__`` (one batched tokenizer call), with the text encoder's policy
  (``[CLS] text [SEP]``, at most ``max_tokens`` tokens, a longer text keeps its first ``max_tokens - 2`` tokens and
  its ``[SEP]``); the ids travel to workers as one flat array, the tokenizer does not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset

from models.config import MODALITIES

log = logging.getLogger(__name__)

__all__ = ["DatasetFiles", "HFTriDataset", "collate", "make_loader", "read_labels", "seed_worker"]

N_VIEWS = 11
ECG_LEADS = 12
FOLLOWUP_COLUMNS = ("has_followup", "incident_hf", "followup_days")


@dataclass(frozen=True)
class DatasetFiles:
    """The files a model reads, all under ``root`` (the workflow's ``out_dir``; Zarr paths are relative to it).

    inputs: one row per patient with the modality locators (subject_id, has_lab/ecg/echo, ecg_zarr, ecg_row,
        echo_zarr, echo_row, n_views_present): ``hftri/manifest.parquet``, or the training view
        ``train/data/inputs.parquet`` (the same columns without the labels, plus each array's digest).
    text: ``hftri/text.parquet`` (subject_id, text).
    labels: the label columns (prevalent_hf; has_followup, incident_hf, followup_days), one or more rows per
        patient: the manifest, or a task's training view ``train/data/{task}.parquet``, which holds only that
        task's columns; None when no labels are needed (encoding).
    splits: ``hftri/splits.parquet`` or a task's training view (subject_id, task, repeat, fold, split).

    The workflow's training jobs read the views, so that a change that leaves a task's view unchanged retrains
    nothing of that task (docs/RUNNING.md, "Changing a criterion").
    """

    root: Path
    inputs: Path
    text: Path
    labels: Path | None
    splits: Path | None

    @classmethod
    def of(cls, source: str | Path | DatasetFiles) -> DatasetFiles:
        """``source`` itself, or the whole dataset of the out_dir ``source`` (``hftri/``)."""
        if isinstance(source, DatasetFiles):
            return source
        root = Path(source)
        manifest = root / "hftri/manifest.parquet"
        return cls(root, manifest, root / "hftri/text.parquet", manifest, root / "hftri/splits.parquet")

    @classmethod
    def training_view(
        cls, root: str | Path, inputs: str | Path, text: str | Path, task_view: str | Path | None
    ) -> DatasetFiles:
        """A training job's files: the inputs view, the lab text and (unless only encoding) a task's view."""
        view = Path(task_view) if task_view is not None else None
        return cls(Path(root), Path(inputs), Path(text), view, view)

    @classmethod
    def of_job(cls, root: str | Path, job_inputs: Mapping[str, Any]) -> DatasetFiles:
        """The files a workflow job declared: the training views when its inputs name them (``inputs``, ``text``
        and, for a training job, ``task_view``), else the whole dataset of ``root``."""
        names = job_inputs.keys()  # a Snakemake Namedlist's `in` looks at its values, not its names
        if "inputs" not in names:
            return cls.of(root)
        task_view = job_inputs["task_view"] if "task_view" in names else None
        return cls.training_view(root, job_inputs["inputs"], job_inputs["text"], task_view)


def read_labels(source: str | Path | DatasetFiles) -> pl.DataFrame:
    """subject_id, label (prevalent_hf 0/1), event (incident_hf 0/1, -1 without follow-up), time (follow-up days,
    NaN without follow-up), has_followup — one row per patient of the labels file (an out_dir means its manifest),
    sorted by subject_id. A labels file without the follow-up columns (the diagnosis view) gives every patient no
    follow-up; without prevalent_hf (or no labels file) the label is -1."""
    files = DatasetFiles.of(source)
    if files.labels is None:
        table = pl.read_parquet(files.inputs, columns=["subject_id"])
    else:
        table = pl.read_parquet(files.labels).unique("subject_id", keep="first", maintain_order=True)
    if "prevalent_hf" in table.columns:
        label = pl.col("prevalent_hf").fill_null(False).cast(pl.Int64)
    else:
        label = pl.lit(-1, pl.Int64)
    if all(column in table.columns for column in FOLLOWUP_COLUMNS):
        followup = [
            pl.when(pl.col("has_followup") & pl.col("incident_hf").is_not_null())
            .then(pl.col("incident_hf").cast(pl.Int64))
            .otherwise(-1)
            .alias("event"),
            pl.when(pl.col("has_followup"))
            .then(pl.col("followup_days").cast(pl.Float32))
            .otherwise(float("nan"))
            .alias("time"),
            pl.col("has_followup").fill_null(False),
        ]
    else:
        followup = [
            pl.lit(-1, pl.Int64).alias("event"),
            pl.lit(float("nan"), pl.Float32).alias("time"),
            pl.lit(False).alias("has_followup"),
        ]
    return table.select("subject_id", label.alias("label"), *followup).sort("subject_id")


def _tokenise(tokenizer, texts: Sequence[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat int32 ids and offsets (n + 1,) of ``[CLS] text [SEP]`` per text, truncated as the text encoder does."""
    if not texts:
        return np.zeros(0, np.int32), np.zeros(1, np.int64)
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    sep = tokenizer.sep_token_id
    cut = sum(len(ids) > max_tokens for ids in encoded)
    if cut:
        log.warning("%d of %d lab texts exceed %d tokens and were truncated at the end", cut, len(encoded), max_tokens)
    encoded = [ids if len(ids) <= max_tokens else [*ids[: max_tokens - 1], sep] for ids in encoded]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(ids) for ids in encoded])
    flat = np.fromiter((i for ids in encoded for i in ids), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


class HFTriDataset(Dataset):
    """Patients of ``{out_dir}/hftri/`` (see the module docstring for the item layout and the decisions).

    out_dir: the workflow's ``out_dir`` (holds ``hftri/manifest.parquet``, ``hftri/text.parquet`` and the stores
        named by the manifest's ``ecg_zarr`` / ``echo_zarr``, relative to it), or the :class:`DatasetFiles` to read.
    subjects: the patients, in item order (e.g. one split of ``hftri/splits.parquet``); unknown ids are an error.
    tokenizer: the text encoder's WordPiece tokenizer (``TextEncoder.tokenizer``); needed when "lab" is used.
    train: training items (random ECG crop of ``ecg_crop`` samples per (seed, epoch, patient)) or evaluation
        items (whole records).
    """

    def __init__(
        self,
        out_dir: str | Path | DatasetFiles,
        subjects: Sequence[int],
        *,
        tokenizer=None,
        max_tokens: int = 512,
        train: bool,
        seed: int,
        modalities: Sequence[str] = MODALITIES,
        ecg_crop: int = 2250,
        drop_empty: bool = True,
        require_lab_values: bool = False,
    ) -> None:
        super().__init__()
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {tuple(modalities)}")
        if "lab" in modalities and tokenizer is None:
            raise ValueError("the lab modality needs the text encoder's tokenizer")
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 ([CLS] and [SEP]), got {max_tokens}")
        files = DatasetFiles.of(out_dir)
        self.out_dir = files.root
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0
        self.ecg_crop = int(ecg_crop)
        self.max_tokens = int(max_tokens)

        manifest = pl.read_parquet(files.inputs).with_columns(_known=pl.lit(True))
        texts = pl.read_parquet(files.text, columns=["subject_id", "text"])
        labels = read_labels(files)
        wanted = pl.DataFrame({"subject_id": [int(s) for s in subjects]}, schema={"subject_id": pl.Int64})
        if wanted["subject_id"].n_unique() != wanted.height:
            raise ValueError("subjects contains duplicates")
        table = (
            wanted.with_row_index("_order")
            .join(manifest, on="subject_id", how="left")
            .join(texts, on="subject_id", how="left")
            .join(labels, on="subject_id", how="left")
            .sort("_order")
        )
        missing = table.filter(pl.col("_known").is_null())["subject_id"].to_list()
        if missing:
            raise ValueError(f"{len(missing)} subjects are not in {files.inputs}")
        unlabelled = table.filter(pl.col("label").is_null())["subject_id"].to_list()
        if unlabelled:
            raise ValueError(f"{len(unlabelled)} subjects have no row in {files.labels}")
        has_text = table["text"].fill_null("").str.strip_chars().str.len_chars() > 0
        lab = has_text & (table["has_lab"].fill_null(False) if require_lab_values else True)
        ecg = table["has_ecg"].fill_null(False) & table["ecg_zarr"].is_not_null()
        echo = (
            table["has_echo"].fill_null(False)
            & table["echo_zarr"].is_not_null()
            & (table["n_views_present"].fill_null(0) > 0)
        )
        present = np.stack([lab.to_numpy(), ecg.to_numpy(), echo.to_numpy()], 1).astype(bool)
        present &= np.array([m in self.modalities for m in MODALITIES])[None]
        keep = present.any(1) if drop_empty else np.ones(len(present), bool)
        self.dropped: list[int] = table["subject_id"].filter(pl.Series(~keep)).to_list()
        if self.dropped:
            log.info("%d of %d subjects have none of %s and are left out", len(self.dropped), table.height, modalities)
        table = table.filter(pl.Series(keep))
        self.present = present[keep]

        self.subject_ids = table["subject_id"].to_numpy().astype(np.int64)
        self.label = table["label"].to_numpy().astype(np.int64)
        self.event = table["event"].to_numpy().astype(np.int64)
        self.time = table["time"].to_numpy().astype(np.float32)
        self.has_followup = table["has_followup"].to_numpy().astype(bool)
        self.ecg_zarr = table["ecg_zarr"].to_list()
        self.ecg_row = table["ecg_row"].fill_null(-1).to_numpy().astype(np.int64)
        self.echo_zarr = table["echo_zarr"].to_list()
        self.echo_row = table["echo_row"].fill_null(-1).to_numpy().astype(np.int64)

        self.pad_id = 0
        if "lab" in self.modalities:
            self.pad_id = int(tokenizer.pad_token_id)
            self.token_ids, self.token_offsets = _tokenise(
                tokenizer, table["text"].fill_null("").to_list(), self.max_tokens
            )
        # Any store of each kind tells the array shapes (read lazily, like every store access).
        self._ecg_probe = next(iter(manifest["ecg_zarr"].drop_nulls().to_list()), None)
        self._echo_probe = next(iter(manifest["echo_zarr"].drop_nulls().to_list()), None)
        self._arrays = {}  # opened lazily per process; see _open

    # -- process-local Zarr handles

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # never pickle open stores: each worker opens its own
        return state

    def _open(self, store: str, name: str):
        """The array ``name`` of the Zarr store ``store`` (relative to out_dir), opened once per process."""
        arrays = self.__dict__.setdefault("_arrays", {})
        pid = os.getpid()
        if arrays.get("_pid") != pid:  # a forked child must not reuse its parent's handles
            arrays.clear()
            arrays["_pid"] = pid
        key = (store, name)
        if key not in arrays:
            import zarr

            arrays[key] = zarr.open_array(store=str(self.out_dir / store), path=name, mode="r")
        return arrays[key]

    @property
    def ecg_length(self) -> int | None:
        """Samples per stored ECG record (None when no patient of the manifest has an ECG)."""
        if self._ecg_probe is None:
            return None
        return int(self._open(self._ecg_probe, "ecg").shape[-1])

    @property
    def echo_shape(self) -> tuple[int, ...] | None:
        """(views, frames, size, size, 3) of a stored echo study (None when no patient has one)."""
        if self._echo_probe is None:
            return None
        return tuple(int(s) for s in self._open(self._echo_probe, "echo").shape[1:])

    @property
    def opened_stores(self) -> list[tuple[str, str]]:
        """(store, array) pairs this process has opened (for tests and diagnostics)."""
        return [k for k in self.__dict__.get("_arrays", {}) if k != "_pid"]

    # -- items

    def set_epoch(self, epoch: int) -> None:
        """Select the training crops of ``epoch`` (call before iterating a DataLoader each epoch)."""
        self.epoch = int(epoch)

    def ecg_crop_start(self, index: int, epoch: int | None = None) -> int:
        """Start of the training crop of item ``index`` in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        spare = (self.ecg_length or self.ecg_crop) - self.ecg_crop
        sequence = np.random.SeedSequence([self.seed, int(epoch), int(self.subject_ids[index])])
        return int(np.random.default_rng(sequence).integers(0, spare + 1))

    def __len__(self) -> int:
        return len(self.subject_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        present = self.present[index]
        item: dict[str, torch.Tensor] = {
            "subject_id": torch.tensor(self.subject_ids[index]),
            "present": torch.from_numpy(present.copy()),
            "label": torch.tensor(self.label[index]),
            "event": torch.tensor(self.event[index]),
            "time": torch.tensor(self.time[index]),
            "has_followup": torch.tensor(self.has_followup[index]),
        }
        if "lab" in self.modalities:
            ids = self.token_ids[self.token_offsets[index] : self.token_offsets[index + 1]]
            item["input_ids"] = torch.from_numpy(ids.astype(np.int64))
        if "ecg" in self.modalities and self.ecg_length is not None:
            if present[1]:
                ecg = np.asarray(self._open(self.ecg_zarr[index], "ecg")[int(self.ecg_row[index])], dtype=np.float32)
            else:
                ecg = np.zeros((ECG_LEADS, self.ecg_length), np.float32)
            if self.train:
                if ecg.shape[-1] < self.ecg_crop:
                    raise ValueError(f"ECG records have {ecg.shape[-1]} samples, fewer than ecg_crop {self.ecg_crop}")
                start = self.ecg_crop_start(index)
                ecg = ecg[:, start : start + self.ecg_crop]
            item["ecg"] = torch.from_numpy(np.ascontiguousarray(ecg))
        if "echo" in self.modalities and self.echo_shape is not None:
            if present[2]:
                store, row = self.echo_zarr[index], int(self.echo_row[index])
                echo = np.asarray(self._open(store, "echo")[row], dtype=np.uint8)
                views = np.asarray(self._open(store, "view_present")[row], dtype=bool)
            else:
                echo = np.zeros(self.echo_shape, np.uint8)
                views = np.zeros(self.echo_shape[0], bool)
            item["echo"] = torch.from_numpy(np.ascontiguousarray(echo))
            item["view_present"] = torch.from_numpy(views.copy())
        return item

    @property
    def collate_fn(self):
        """:func:`collate` with this dataset's padding id."""
        return partial(collate, pad_id=self.pad_id)


def collate(items: Sequence[Mapping[str, torch.Tensor]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Stack items into a batch; ``input_ids`` are right-padded with ``pad_id`` and get ``attention_mask`` (B, L)."""
    if not items:
        raise ValueError("collate needs at least one item")
    batch: dict[str, torch.Tensor] = {}
    for key in items[0]:
        if key == "input_ids":
            width = max(len(item[key]) for item in items)
            ids = torch.full((len(items), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(items), width), dtype=torch.long)
            for i, item in enumerate(items):
                n = len(item[key])
                ids[i, :n] = item[key]
                mask[i, :n] = 1
            batch["input_ids"], batch["attention_mask"] = ids, mask
        else:
            batch[key] = torch.stack([item[key] for item in items])
    return batch


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from the seed torch gave it (itself from the loader's
    generator), so anything random in a worker is reproducible."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    *,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader with a seeded ``torch.Generator`` (its order is a function of the seed and of how many epochs
    it has served: save ``loader.generator.get_state()`` to resume) and spawn-context workers when
    ``num_workers > 0`` (never fork a process that may hold CUDA or threads).  Workers are not persistent, so the
    dataset (and its epoch, see :meth:`HFTriDataset.set_epoch`) is sent afresh each epoch."""
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
    collate_fn = getattr(dataset, "collate_fn", None)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=generator,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        multiprocessing_context="spawn" if num_workers > 0 else None,
        persistent_workers=False,
    )
