"""Zarr v3 shard stores and shard plans shared by the ECG and echo stages.

Each shard is written by exactly one job into its own store (never two writers on one store), first
under a temporary name and renamed when complete, so a killed job never leaves a store that looks done.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import zarr


def plan_shards(records: pl.DataFrame, shard_size: int, sort_by: list[str]) -> pl.DataFrame:
    """Assign records to shards of at most ``shard_size`` rows, in a deterministic order."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    return records.sort(sort_by).with_columns(shard=(pl.int_range(pl.len()) // shard_size).cast(pl.Int64))


class ShardWriter:
    """Appends fixed-shape samples to one array of a Zarr v3 store, in chunks, so that memory holds at
    most one chunk of samples whatever the shard size."""

    def __init__(
        self,
        group: zarr.Group,
        name: str,
        sample_shape: tuple[int, ...],
        dtype: str,
        capacity: int,
        chunk: int,
        compressors: Any = "auto",
    ) -> None:
        self.chunk = max(1, chunk)
        self.array = group.create_array(
            name,
            shape=(max(capacity, 0), *sample_shape),
            chunks=(self.chunk, *sample_shape),
            dtype=dtype,
            fill_value=0,
            compressors=compressors,
        )
        self._buffer: list[np.ndarray] = []
        self.n_written = 0

    def append(self, sample: np.ndarray) -> int:
        """Queue one sample; return its row in the array."""
        self._buffer.append(sample)
        row = self.n_written + len(self._buffer) - 1
        if len(self._buffer) == self.chunk:
            self.flush()
        return row

    def digest(self, sample: np.ndarray) -> str:
        """SHA-256 of ``sample`` as the array stores it (its dtype, C order). The stage indexes carry it, so an
        index file changes whenever a stored sample does: Snakemake compares the checksums of small files such as
        the index, never of a Zarr store, before deciding that training need not run again."""
        stored = np.ascontiguousarray(sample, dtype=self.array.dtype)
        return hashlib.sha256(stored.tobytes()).hexdigest()

    def flush(self) -> None:
        if self._buffer:
            block = np.stack(self._buffer)
            self.array[self.n_written : self.n_written + len(block)] = block
            self.n_written += len(block)
            self._buffer.clear()

    def close(self) -> None:
        self.flush()
        self.array.resize((self.n_written, *self.array.shape[1:]))


@contextmanager
def shard_store(path: Path | str) -> Iterator[zarr.Group]:
    """A new Zarr v3 group written at ``path.tmp`` and moved to ``path`` when the block succeeds."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    for stale in (tmp, path):
        if stale.exists():
            shutil.rmtree(stale)
    path.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    yield group
    tmp.rename(path)


def write_text_atomic(text: str, path: Path | str) -> None:
    """Write ``text`` to a unique temporary file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_parquet_atomic(frame: pl.DataFrame, path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
