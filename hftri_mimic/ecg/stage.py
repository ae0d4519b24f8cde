"""ECG stage (docs/SIGNALS.md, ECG): the chosen ECG of every cohort patient -> quality-checked, ST-MEM-ready
(12, 2500) float32 arrays in Zarr v3 shard stores, with an index and an exclusions table.

Rules: ``ecg_plan`` (a checkpoint: the shard count depends on the cohort) -> one ``ecg_shard`` job
per shard (its own store, streamed record by record) -> ``ecg_collect`` (index, exclusions, counts).

Measure once, select cheaply: a shard job reads, processes and measures every record it can
(``measure_record``) and stores the signal of each, whatever the thresholds (``ecg.THRESHOLDS``); the
collect job applies the thresholds to the measurements. So a threshold change reruns the collect job
only, while a processing change (rate, filters, duration, quality leads) reruns the shards. Every planned
record ends up in exactly one of index (kept) or exclusions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import polars as pl
from tqdm import tqdm
from zarr.codecs import BloscCodec

from hftri_mimic.common.storage import ShardWriter, plan_shards, shard_store, write_parquet_atomic
from hftri_mimic.ecg.signal import (
    EXCLUSION_REASONS,
    MEASUREMENTS,
    ST_MEM_LEADS,
    THRESHOLDS,
    EcgExclusion,
    EcgSettings,
    measure_record,
    structural_exclusion,
    threshold_exclusion,
)
from hftri_mimic.ingest.source_files import NOT_DOWNLOADED, MissingSourceFilesError, masked

log = logging.getLogger(__name__)

PLAN_COLUMNS = ["subject_id", "ecg_study_id", "ecg_path", "shard"]
# The reader's reasons for a record whose files are not there: an incomplete download in a real tree.
ABSENT_FILE_REASONS = frozenset({"missing_header", "missing_data"})
# A shard's measured records (stored, whatever the thresholds) and the collected index of kept ones.
INDEX_SCHEMA = {
    "subject_id": pl.Int64,
    "ecg_study_id": pl.Int64,
    "shard": pl.Int64,
    "row": pl.Int64,
    "zarr_path": pl.String,
    "fs_in": pl.Float64,
    "duration_in_s": pl.Float64,
    "min_lead_std_mv": pl.Float64,
    "flattest_lead": pl.String,
    "max_clip_fraction": pl.Float64,
    "max_clip_lead": pl.String,
    "quality": pl.String,
    "quality_score": pl.Float64,
    "signal_sha256": pl.String,
}
# Filtered float32 ECGs barely compress: zarr's default zstd saves 7% at ~0.4 ms a record (as much as
# the rest of the writing), byte-shuffled LZ4 in Blosc saves 17% at half that time.
ECG_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
EXCLUSION_SCHEMA = {
    "subject_id": pl.Int64,
    "ecg_study_id": pl.Int64,
    "path": pl.String,
    "reason": pl.String,
    "detail": pl.String,
}
# A shard's unreadable records: the exclusion, and the sampling rate when the header gave one before the
# failed check (the collect job names such a record low_sampling_rate when the rate is below min_fs).
SHARD_EXCLUSION_SCHEMA = {**EXCLUSION_SCHEMA, "fs_in": pl.Float64}


def settings_from_config(ecg_config: dict) -> EcgSettings:
    """EcgSettings from the ``ecg`` block of config.yaml (keys other than settings are ignored)."""
    fields = EcgSettings.__dataclass_fields__
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ecg_config.items() if k in fields}
    return EcgSettings(**values)


def processing_settings(settings: EcgSettings) -> dict:
    """The settings that change a stored signal or its measurements (all but ``THRESHOLDS``)."""
    return {k: v for k, v in asdict(settings).items() if k not in THRESHOLDS}


def write_plan(cohort: Path | str, out: Path | str, shard_size: int) -> int:
    """Shard plan: one row per cohort patient with a chosen ECG."""
    records = pl.read_parquet(cohort, columns=["subject_id", "ecg_study_id", "ecg_path"]).filter(
        pl.col("ecg_study_id").is_not_null()
    )
    plan = plan_shards(records, shard_size, ["subject_id", "ecg_study_id"]).select(PLAN_COLUMNS)
    write_parquet_atomic(plan, out)
    n_shards = plan["shard"].n_unique() if plan.height else 0
    log.info("ECG plan: %d records in %d shards of <= %d", plan.height, n_shards, shard_size)
    return plan.height


def process_shard(
    plan: Path | str,
    shard: int,
    ecg_root: Path | str,
    settings: EcgSettings,
    zarr_out: Path | str,
    measured_out: Path | str,
    exclusions_out: Path | str,
    zarr_relpath: str,
    chunk: int = 32,
    missing_files: str | None = None,
) -> dict:
    """Read, process and measure the records of one shard; stream every readable signal into its store.

    The thresholds of ``settings`` are not looked at (``collect`` applies them). ``measured_out``: one row
    per stored record (INDEX_SCHEMA); ``exclusions_out``: one row per unreadable record
    (SHARD_EXCLUSION_SCHEMA). ``missing_files`` (config ``source.missing_files``, for a real tree; None for the
    demo, whose absent files are planted faults): a record whose files are absent is an error (``error``), or is
    excluded as ``not_downloaded`` (``exclude``) instead of ``missing_header``/``missing_data``.
    """
    t0 = time.perf_counter()
    records = pl.read_parquet(plan).filter(pl.col("shard") == shard)
    measured: list[dict] = []
    excluded: list[dict] = []
    with shard_store(zarr_out) as group:
        group.attrs.update(
            {
                "leads": list(ST_MEM_LEADS),
                "fs": settings.target_fs,
                "units": "mV",
                "settings": processing_settings(settings),
            }
        )
        writer = ShardWriter(
            group,
            "ecg",
            (len(ST_MEM_LEADS), settings.n_samples),
            "float32",
            records.height,
            chunk,
            compressors=ECG_COMPRESSOR,
        )
        for rec in tqdm(
            records.iter_rows(named=True), total=records.height, desc=f"ECG shard {shard}", unit="rec", mininterval=10
        ):
            path = Path(ecg_root) / rec["ecg_path"]
            try:
                ecg = measure_record(path, settings)
            except EcgExclusion as exc:
                absent = missing_files is not None and exc.reason in ABSENT_FILE_REASONS
                if absent and missing_files == "error":
                    raise MissingSourceFilesError(
                        f"ECG shard {shard}: the files of a planned record are absent ({masked(rec['ecg_path'])}): an "
                        "incomplete download? `snakemake download_cohort`, or source.missing_files: exclude"
                    ) from None
                excluded.append(
                    {
                        "subject_id": rec["subject_id"],
                        "ecg_study_id": rec["ecg_study_id"],
                        "path": rec["ecg_path"],
                        "reason": NOT_DOWNLOADED if absent else exc.reason,
                        "detail": f"{exc.reason}: {exc.detail}" if absent else exc.detail,
                        "fs_in": exc.fs_in,
                    }
                )
                continue
            row = writer.append(ecg.signal)
            measured.append(
                {
                    "subject_id": rec["subject_id"],
                    "ecg_study_id": rec["ecg_study_id"],
                    "shard": shard,
                    "row": row,
                    "zarr_path": zarr_relpath,
                    **ecg.measurements(),
                    "signal_sha256": writer.digest(ecg.signal),
                }
            )
        writer.close()
    if len(measured) + len(excluded) != records.height:
        raise RuntimeError(
            f"ECG shard {shard}: {records.height} records in, {len(measured)} measured + {len(excluded)} unreadable"
        )
    write_parquet_atomic(pl.DataFrame(measured, schema=INDEX_SCHEMA), measured_out)
    write_parquet_atomic(pl.DataFrame(excluded, schema=SHARD_EXCLUSION_SCHEMA), exclusions_out)
    seconds = time.perf_counter() - t0
    log.info(
        "ECG shard %d: %d records in, %d measured and stored, %d unreadable, %.1f s (%.1f records/s)",
        shard,
        records.height,
        len(measured),
        len(excluded),
        seconds,
        records.height / max(seconds, 1e-9),
    )
    return {"records": records.height, "measured": len(measured), "excluded": len(excluded), "seconds": seconds}


def select(
    planned: pl.DataFrame, measured: pl.DataFrame, unreadable: pl.DataFrame, settings: EcgSettings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply the thresholds: (index of kept records, exclusions) from the shards' tables.

    A measured record is kept unless ``threshold_exclusion`` names a reason; an unreadable one keeps its
    reason unless its sampling rate is below ``min_fs`` (check 5 comes first).
    """
    paths = dict(zip(planned["ecg_study_id"], planned["ecg_path"], strict=True))
    kept, excluded = [], []
    for rec in measured.iter_rows(named=True):
        exclusion = threshold_exclusion(rec, settings)
        if exclusion is None:
            kept.append(rec)
        else:
            excluded.append(
                {
                    "subject_id": rec["subject_id"],
                    "ecg_study_id": rec["ecg_study_id"],
                    "path": paths[rec["ecg_study_id"]],
                    "reason": exclusion.reason,
                    "detail": exclusion.detail,
                }
            )
    for rec in unreadable.iter_rows(named=True):
        exclusion = structural_exclusion(EcgExclusion(rec["reason"], rec["detail"], rec["fs_in"]), settings)
        excluded.append(
            {**{k: rec[k] for k in EXCLUSION_SCHEMA}, "reason": exclusion.reason, "detail": exclusion.detail}
        )
    return pl.DataFrame(kept, schema=INDEX_SCHEMA), pl.DataFrame(excluded, schema=EXCLUSION_SCHEMA)


def collect(
    plan: Path | str,
    measured: list[Path | str],
    exclusions: list[Path | str],
    settings: EcgSettings,
    index_out: Path | str,
    exclusions_out: Path | str,
) -> None:
    """Join the shard tables, apply the thresholds and check records in = kept + excluded, with nothing
    lost or doubled."""
    planned = pl.read_parquet(plan)
    measured_all = pl.concat([pl.read_parquet(p) for p in measured]) if measured else pl.DataFrame(schema=INDEX_SCHEMA)
    unreadable = (
        pl.concat([pl.read_parquet(p) for p in exclusions])
        if exclusions
        else pl.DataFrame(schema=SHARD_EXCLUSION_SCHEMA)
    )
    seen = pl.concat([measured_all.select("ecg_study_id"), unreadable.select("ecg_study_id")])
    if seen.height != planned.height or set(seen["ecg_study_id"]) != set(planned["ecg_study_id"]):
        raise RuntimeError(
            f"ECG records do not reconcile: {planned.height} planned, {measured_all.height} measured, "
            f"{unreadable.height} unreadable"
        )
    index, excl = select(planned, measured_all, unreadable, settings)
    if index.height + excl.height != planned.height:
        raise RuntimeError(f"ECG selection: {planned.height} records in, {index.height} kept + {excl.height} excluded")
    write_parquet_atomic(index.sort("subject_id", "ecg_study_id"), index_out)
    write_parquet_atomic(excl.sort("subject_id", "ecg_study_id"), exclusions_out)
    counts = excl.group_by("reason").len().sort("reason").rows()
    log.info(
        "ECG: %d records in = %d kept + %d excluded (%s); thresholds %s",
        planned.height,
        index.height,
        excl.height,
        ", ".join(f"{reason}: {n}" for reason, n in counts) or "none",
        ", ".join(f"{k}={getattr(settings, k)}" for k in THRESHOLDS),
    )


__all__ = [
    "EXCLUSION_REASONS",
    "MEASUREMENTS",
    "collect",
    "process_shard",
    "processing_settings",
    "select",
    "settings_from_config",
    "write_plan",
]
