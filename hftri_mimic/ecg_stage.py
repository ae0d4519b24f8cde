"""ECG stage (docs/SIGNALS.md, ECG): the chosen ECG of every cohort patient -> quality-checked, ST-MEM-ready
(12, 2500) float32 arrays in Zarr v3 shard stores, with an index and an exclusions table.

Rules: ``ecg_shard_plan`` (a checkpoint: the shard count depends on the cohort) -> one ``ecg_shard`` job
per shard (its own store, streamed record by record) -> ``ecg_collect`` (index, exclusions, counts).
Every planned record ends up in exactly one of index (kept) or exclusions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import polars as pl
from tqdm import tqdm
from zarr.codecs import BloscCodec

from hftri_mimic.ecg import EXCLUSION_REASONS, ST_MEM_LEADS, EcgExclusion, EcgSettings, process_record
from hftri_mimic.storage import ShardWriter, plan_shards, shard_store, write_parquet_atomic

log = logging.getLogger(__name__)

PLAN_COLUMNS = ["subject_id", "ecg_study_id", "ecg_path", "shard"]
INDEX_SCHEMA = {
    "subject_id": pl.Int64,
    "ecg_study_id": pl.Int64,
    "shard": pl.Int64,
    "row": pl.Int64,
    "zarr_path": pl.String,
    "fs_in": pl.Float64,
    "duration_in_s": pl.Float64,
    "min_lead_std_mv": pl.Float64,
    "max_clip_fraction": pl.Float64,
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


def settings_from_config(ecg_config: dict) -> EcgSettings:
    """EcgSettings from the ``ecg`` block of config.yaml (keys other than settings are ignored)."""
    fields = EcgSettings.__dataclass_fields__
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ecg_config.items() if k in fields}
    return EcgSettings(**values)


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
    index_out: Path | str,
    exclusions_out: Path | str,
    zarr_relpath: str,
    chunk: int = 32,
) -> dict:
    """Read, check and preprocess the records of one shard; stream kept signals into its store."""
    t0 = time.perf_counter()
    records = pl.read_parquet(plan).filter(pl.col("shard") == shard)
    kept: list[dict] = []
    excluded: list[dict] = []
    with shard_store(zarr_out) as group:
        group.attrs.update(
            {"leads": list(ST_MEM_LEADS), "fs": settings.target_fs, "units": "mV", "settings": asdict(settings)}
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
                ecg = process_record(path, settings)
            except EcgExclusion as exc:
                excluded.append(
                    {
                        "subject_id": rec["subject_id"],
                        "ecg_study_id": rec["ecg_study_id"],
                        "path": rec["ecg_path"],
                        "reason": exc.reason,
                        "detail": exc.detail,
                    }
                )
                continue
            row = writer.append(ecg.signal)
            kept.append(
                {
                    "subject_id": rec["subject_id"],
                    "ecg_study_id": rec["ecg_study_id"],
                    "shard": shard,
                    "row": row,
                    "zarr_path": zarr_relpath,
                    "fs_in": ecg.fs_in,
                    "duration_in_s": ecg.duration_in_s,
                    "min_lead_std_mv": ecg.min_lead_std_mv,
                    "max_clip_fraction": ecg.max_clip_fraction,
                    "quality": ecg.quality,
                    "quality_score": ecg.quality_score,
                    "signal_sha256": writer.digest(ecg.signal),
                }
            )
        writer.close()
    if len(kept) + len(excluded) != records.height:
        raise RuntimeError(
            f"ECG shard {shard}: {records.height} records in, {len(kept)} kept + {len(excluded)} excluded"
        )
    write_parquet_atomic(pl.DataFrame(kept, schema=INDEX_SCHEMA), index_out)
    write_parquet_atomic(pl.DataFrame(excluded, schema=EXCLUSION_SCHEMA), exclusions_out)
    seconds = time.perf_counter() - t0
    log.info(
        "ECG shard %d: %d records in, %d kept, %d excluded, %.1f s (%.1f records/s)",
        shard,
        records.height,
        len(kept),
        len(excluded),
        seconds,
        records.height / max(seconds, 1e-9),
    )
    return {"records": records.height, "kept": len(kept), "excluded": len(excluded), "seconds": seconds}


def collect(
    plan: Path | str,
    indexes: list[Path | str],
    exclusions: list[Path | str],
    index_out: Path | str,
    exclusions_out: Path | str,
) -> None:
    """Concatenate the shard tables and check records in = kept + excluded, with nothing lost or doubled."""
    planned = pl.read_parquet(plan)
    index = pl.concat([pl.read_parquet(p) for p in indexes]) if indexes else pl.DataFrame(schema=INDEX_SCHEMA)
    excl = pl.concat([pl.read_parquet(p) for p in exclusions]) if exclusions else pl.DataFrame(schema=EXCLUSION_SCHEMA)
    seen = pl.concat([index.select("ecg_study_id"), excl.select("ecg_study_id")])
    if seen.height != planned.height or set(seen["ecg_study_id"]) != set(planned["ecg_study_id"]):
        raise RuntimeError(
            f"ECG records do not reconcile: {planned.height} planned, {index.height} kept, {excl.height} excluded"
        )
    write_parquet_atomic(index.sort("subject_id"), index_out)
    write_parquet_atomic(excl.sort("subject_id"), exclusions_out)
    counts = excl.group_by("reason").len().sort("reason").rows()
    log.info(
        "ECG: %d records in = %d kept + %d excluded (%s)",
        planned.height,
        index.height,
        excl.height,
        ", ".join(f"{reason}: {n}" for reason, n in counts) or "none",
    )


__all__ = ["EXCLUSION_REASONS", "collect", "process_shard", "settings_from_config", "write_plan"]
