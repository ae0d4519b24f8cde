"""Echo stage (docs/SIGNALS.md, Echo): every DICOM of every cohort echo study -> view-classified cines -> per study,
the best clip of each of EchoPrime's 11 views in Zarr v3 shard stores, with an index, a per-DICOM
table and a study exclusions table.

Rules: ``echo_shard_plan`` (a checkpoint: one row per DICOM of every cohort study, studies assigned to
shards) -> ``view_classifier_demo`` (demo only, when no EchoPrime weights are configured) -> one
``echo_shard`` job per shard -> ``echo_collect``. DICOMs in = used + skipped + excluded, studies in = kept +
excluded, checked at every step.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from hftri_mimic.common.storage import ShardWriter, plan_shards, shard_store, write_parquet_atomic
from hftri_mimic.echo.dicom import VIEWS, Cine, EchoExclusion, EchoSettings, read_cine
from hftri_mimic.echo.view_classifier import (
    ViewClassifierConfig,
    load_view_classifier,
    predict_views,
    save_view_classifier,
    train_view_classifier,
)
from hftri_mimic.ingest.source_files import NOT_DOWNLOADED, MissingSourceFilesError

log = logging.getLogger(__name__)

STUDY_EXCLUSION_REASONS = {
    "no_usable_cine": "no readable multi-frame cine in the study",
    # a real tree whose user opted to exclude an incomplete download's studies (source.missing_files: exclude): a
    # study with a DICOM absent is excluded whole, since its views would be chosen from part of it
    "not_downloaded": "a DICOM of the study is not downloaded",
}
NOT_BEST = "not_best_clip"  # a readable cine that another cine of its view beat
DICOM_SCHEMA = {
    "subject_id": pl.Int64,
    "echo_study_id": pl.Int64,
    "dicom_filepath": pl.String,
    "status": pl.String,  # used | skipped | excluded
    "reason": pl.String,
    "detail": pl.String,
    "predicted_view": pl.String,
    "probability": pl.Float64,
    "n_frames": pl.Int64,
    "mask_source": pl.String,
}
STUDY_EXCLUSION_SCHEMA = {"subject_id": pl.Int64, "echo_study_id": pl.Int64, "reason": pl.String, "detail": pl.String}
INDEX_SCHEMA = {
    "subject_id": pl.Int64,
    "echo_study_id": pl.Int64,
    "shard": pl.Int64,
    "row": pl.Int64,
    "zarr_path": pl.String,
    "n_dicoms": pl.Int64,
    "n_cines": pl.Int64,
    "n_views_present": pl.Int64,
    "views_present": pl.List(pl.String),
    **{f"{view}_dicom": pl.String for view in VIEWS},
    **{f"{view}_prob": pl.Float64 for view in VIEWS},
    "clips_sha256": pl.String,
}


@dataclass(frozen=True)
class ViewClassifierTraining:
    """How the demo trains its view classifier (config ``echo.view_classifier``)."""

    variant: str = "convnext_mini"
    train_dicoms: int = 1500
    epochs: int = 8
    seed: int = 0
    batch_size: int = 32


def echo_settings(echo_config: dict) -> EchoSettings:
    fields = EchoSettings.__dataclass_fields__
    return EchoSettings(**{k: v for k, v in echo_config.items() if k in fields})


def classifier_config(echo_config: dict) -> ViewClassifierConfig:
    """The classifier takes the view frames at echo.classify_size."""
    return ViewClassifierConfig(
        variant=echo_config["view_classifier"]["variant"], input_size=echo_config["classify_size"]
    )


def write_plan(index_admissions: Path | str, echo_record_list: Path | str, out: Path | str, shard_size: int) -> int:
    """One row per DICOM of each cohort patient's chosen echo study; whole studies go to one shard."""
    studies = pl.read_parquet(index_admissions, columns=["subject_id", "echo_study_id"]).filter(
        pl.col("echo_study_id").is_not_null()
    )
    studies = plan_shards(studies, shard_size, ["subject_id", "echo_study_id"])
    dicoms = pl.read_parquet(echo_record_list, columns=["study_id", "dicom_filepath"]).rename(
        {"study_id": "echo_study_id"}
    )
    plan = studies.join(dicoms, on="echo_study_id", how="left").sort("shard", "subject_id", "dicom_filepath")
    write_parquet_atomic(plan.select("subject_id", "echo_study_id", "dicom_filepath", "shard"), out)
    n_missing = plan.filter(pl.col("dicom_filepath").is_null()).height
    log.info(
        "echo plan: %d studies, %d DICOMs in %d shards (%d studies list no DICOM)",
        studies.height,
        plan.height - n_missing,
        studies["shard"].n_unique() if studies.height else 0,
        n_missing,
    )
    return plan.height


def train_demo_classifier(
    truth_dicoms: Path | str,
    echo_root: Path | str,
    settings: EchoSettings,
    config: ViewClassifierConfig,
    training: ViewClassifierTraining,
    weights_out: Path | str,
    metrics_out: Path | str,
    threads: int = 1,
) -> dict:
    """Train the demo's view classifier on demo cines labelled with the generator's true views.

    Only the demo may do this (its ground truth exists); with real data the user gives EchoPrime's
    weights. Cines are sampled evenly over views (seeded), read exactly as the echo stage reads them.
    """
    truth = pl.read_parquet(truth_dicoms).filter(pl.col("view") != "still", pl.col("has_file"))
    per_view = max(1, training.train_dicoms // len(VIEWS))
    sample = (
        truth.with_columns(key=pl.col("dicom_filepath").hash(training.seed))
        .sort("key")
        .group_by("view", maintain_order=True)
        .head(per_view)
        .sort("dicom_filepath")
    )
    frames, labels = [], []
    for row in tqdm(sample.iter_rows(named=True), total=sample.height, desc="view-classifier frames", mininterval=10):
        try:
            cine = read_cine(Path(echo_root) / row["dicom_filepath"], settings)
        except EchoExclusion:
            continue
        frames.append(cine.view_frame)
        labels.append(VIEWS.index(row["view"]))
    model, metrics = train_view_classifier(
        np.stack(frames),
        np.array(labels),
        config,
        epochs=training.epochs,
        batch_size=training.batch_size,
        seed=training.seed,
        threads=threads,
    )
    save_view_classifier(model, weights_out)
    metrics = {**metrics, "training": asdict(training), "trained_on": "demo DICOMs with generator views"}
    Path(metrics_out).write_text(json.dumps(metrics, indent=2, default=float))
    log.info(
        "demo view classifier: held-out accuracy %.3f on %d cines (%d trained)",
        metrics["heldout_accuracy"],
        metrics["n_heldout"],
        metrics["n_train"],
    )
    return metrics


def _dicom_row(
    rec: dict, status: str, reason: str | None = None, detail: str | None = None, cine: Cine | None = None
) -> dict:
    return {
        "subject_id": rec["subject_id"],
        "echo_study_id": rec["echo_study_id"],
        "dicom_filepath": rec["dicom_filepath"],
        "status": status,
        "reason": reason,
        "detail": detail,
        "predicted_view": None,
        "probability": None,
        "n_frames": cine.n_frames_in if cine else None,
        "mask_source": cine.mask_source if cine else None,
    }


class StudyViews:
    """The best clip of each view seen so far in one study (memory: at most 11 clips)."""

    def __init__(self, settings: EchoSettings) -> None:
        self.clips = np.zeros((len(VIEWS), settings.frames, settings.size, settings.size, 3), dtype=np.uint8)
        self.prob = np.zeros(len(VIEWS), dtype=np.float32)
        self.row_of_view: list[dict | None] = [None] * len(VIEWS)

    def offer(self, cine: Cine, probs: np.ndarray, row: dict) -> None:
        view = int(np.argmax(probs))
        row["predicted_view"], row["probability"] = VIEWS[view], float(probs[view])
        best = self.row_of_view[view]
        if best is None or probs[view] > self.prob[view]:
            if best is not None:
                best["status"], best["reason"] = "skipped", NOT_BEST
            self.clips[view], self.prob[view], self.row_of_view[view] = cine.clip, probs[view], row
            row["status"] = "used"
        else:
            row["status"], row["reason"] = "skipped", NOT_BEST


def _classify_batch(model, config: ViewClassifierConfig, batch: list[tuple[Cine, dict]], views: StudyViews) -> None:
    if not batch:
        return
    probs = predict_views(model, np.stack([cine.view_frame for cine, _ in batch]), config)
    for (cine, row), p in zip(batch, probs, strict=True):
        views.offer(cine, p, row)
    batch.clear()


def _absent_dicoms(echo_root: Path | str, records: pl.DataFrame) -> set[str]:
    return {rel for rel in records["dicom_filepath"] if not (Path(echo_root) / rel).is_file()}


def process_shard(
    plan: Path | str,
    shard: int,
    echo_root: Path | str,
    settings: EchoSettings,
    classifier: Path | str,
    config: ViewClassifierConfig,
    zarr_out: Path | str,
    index_out: Path | str,
    dicoms_out: Path | str,
    exclusions_out: Path | str,
    zarr_relpath: str,
    threads: int = 1,
    batch_size: int = 16,
    missing_files: str | None = None,
) -> dict:
    """Read and classify every DICOM of the shard's studies, keep the best clip per view, stream studies
    into the shard's store: ``echo`` (n, 11, frames, size, size, 3) uint8, ``view_present`` (n, 11) bool,
    ``view_prob`` (n, 11) float32. ``missing_files`` (config ``source.missing_files``, for a real tree; None for the
    demo): a study with any DICOM absent is an error (``error``) or is excluded whole as ``not_downloaded``, unread
    (``exclude``)."""
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, threads))
    model = load_view_classifier(classifier, config)
    rows = pl.read_parquet(plan).filter(pl.col("shard") == shard)
    studies = rows.select("subject_id", "echo_study_id").unique(maintain_order=True)
    dicom_rows: list[dict] = []
    index_rows: list[dict] = []
    excluded: list[dict] = []
    present, probabilities = [], []
    n_frames_decoded = 0
    with shard_store(zarr_out) as group:
        group.attrs.update(
            {"views": list(VIEWS), "layout": "study, view, frame, height, width, RGB", "settings": asdict(settings)}
        )
        writer = ShardWriter(
            group,
            "echo",
            (len(VIEWS), settings.frames, settings.size, settings.size, 3),
            "uint8",
            studies.height,
            chunk=1,
        )
        for study in tqdm(
            studies.iter_rows(named=True),
            total=studies.height,
            desc=f"echo shard {shard}",
            unit="study",
            mininterval=10,
        ):
            records = rows.filter(
                pl.col("echo_study_id") == study["echo_study_id"], pl.col("dicom_filepath").is_not_null()
            )
            if missing_files is not None and (absent := _absent_dicoms(echo_root, records)):
                if missing_files == "error":
                    raise MissingSourceFilesError(
                        f"echo shard {shard}: {len(absent)} DICOM(s) of a planned study are absent: an incomplete "
                        "download? `snakemake download_cohort`, or source.missing_files: exclude"
                    )
                for rec in records.iter_rows(named=True):
                    why = "file absent" if rec["dicom_filepath"] in absent else "another DICOM of the study absent"
                    dicom_rows.append(_dicom_row(rec, "excluded", NOT_DOWNLOADED, why))
                detail = f"{len(absent)} of {records.height} DICOMs not downloaded"
                excluded.append({**study, "reason": NOT_DOWNLOADED, "detail": detail})
                continue
            views = StudyViews(settings)
            batch: list[tuple[Cine, dict]] = []
            study_rows = []
            for rec in records.iter_rows(named=True):
                try:
                    cine = read_cine(Path(echo_root) / rec["dicom_filepath"], settings)
                except EchoExclusion as exc:
                    study_rows.append(_dicom_row(rec, exc.status, exc.reason, exc.detail))
                    continue
                n_frames_decoded += cine.n_frames_used
                row = _dicom_row(rec, "pending", cine=cine)
                study_rows.append(row)
                batch.append((cine, row))
                if len(batch) == batch_size:
                    _classify_batch(model, config, batch, views)
            _classify_batch(model, config, batch, views)
            dicom_rows.extend(study_rows)
            n_cines = sum(r["predicted_view"] is not None for r in study_rows)
            used = [r for r in views.row_of_view if r is not None]
            if not used:
                detail = f"{records.height} DICOMs, none a readable cine"
                excluded.append({**study, "reason": "no_usable_cine", "detail": detail})
                continue
            row = writer.append(views.clips)
            mask = [r is not None for r in views.row_of_view]
            present.append(mask)
            probabilities.append(views.prob.copy())
            index_rows.append(
                {
                    **study,
                    "shard": shard,
                    "row": row,
                    "zarr_path": zarr_relpath,
                    "n_dicoms": records.height,
                    "n_cines": n_cines,
                    "n_views_present": sum(mask),
                    "views_present": [v for v, m in zip(VIEWS, mask, strict=True) if m],
                    **{
                        f"{v}_dicom": (r["dicom_filepath"] if r else None)
                        for v, r in zip(VIEWS, views.row_of_view, strict=True)
                    },
                    **{f"{v}_prob": (float(views.prob[i]) if mask[i] else None) for i, v in enumerate(VIEWS)},
                    "clips_sha256": writer.digest(views.clips),
                }
            )
        writer.close()
        n = len(index_rows)
        group.create_array("view_present", data=np.array(present, dtype=bool).reshape(n, len(VIEWS)))
        group.create_array("view_prob", data=np.array(probabilities, dtype=np.float32).reshape(n, len(VIEWS)))

    dicoms = pl.DataFrame(dicom_rows, schema=DICOM_SCHEMA)
    listed = rows.filter(pl.col("dicom_filepath").is_not_null()).height
    if dicoms.height != listed or (dicoms["status"] == "pending").any():
        raise RuntimeError(f"echo shard {shard}: {listed} DICOMs in, {dicoms.height} accounted for")
    if len(index_rows) + len(excluded) != studies.height:
        raise RuntimeError(
            f"echo shard {shard}: {studies.height} studies in, {len(index_rows)} kept + {len(excluded)} excluded"
        )
    write_parquet_atomic(pl.DataFrame(index_rows, schema=INDEX_SCHEMA), index_out)
    write_parquet_atomic(dicoms, dicoms_out)
    write_parquet_atomic(pl.DataFrame(excluded, schema=STUDY_EXCLUSION_SCHEMA), exclusions_out)
    seconds = time.perf_counter() - t0
    counts = dicoms.group_by("status").len().sort("status").rows()
    log.info(
        "echo shard %d: %d studies (%d kept, %d excluded), %d DICOMs (%s), %d frames decoded, %.1f s",
        shard,
        studies.height,
        len(index_rows),
        len(excluded),
        dicoms.height,
        ", ".join(f"{s} {c}" for s, c in counts),
        n_frames_decoded,
        seconds,
    )
    return {"studies": studies.height, "dicoms": dicoms.height, "frames": n_frames_decoded, "seconds": seconds}


def collect(
    plan: Path | str,
    indexes: list,
    dicoms: list,
    exclusions: list,
    index_out: Path | str,
    dicoms_out: Path | str,
    exclusions_out: Path | str,
) -> None:
    """Concatenate the shard tables and check DICOMs and studies reconcile with the plan."""
    planned = pl.read_parquet(plan)

    def concat(paths: list, schema: dict) -> pl.DataFrame:
        return pl.concat([pl.read_parquet(p) for p in paths]) if paths else pl.DataFrame(schema=schema)

    index = concat(indexes, INDEX_SCHEMA)
    dicom_table = concat(dicoms, DICOM_SCHEMA)
    excluded = concat(exclusions, STUDY_EXCLUSION_SCHEMA)
    listed = planned.filter(pl.col("dicom_filepath").is_not_null())
    if dicom_table.height != listed.height or set(dicom_table["dicom_filepath"]) != set(listed["dicom_filepath"]):
        raise RuntimeError(f"echo DICOMs do not reconcile: {listed.height} planned, {dicom_table.height} accounted")
    n_studies = planned["echo_study_id"].n_unique()
    if index.height + excluded.height != n_studies:
        raise RuntimeError(
            f"echo studies do not reconcile: {n_studies} in, {index.height} kept + {excluded.height} excluded"
        )
    write_parquet_atomic(index.sort("subject_id"), index_out)
    write_parquet_atomic(dicom_table.sort("subject_id", "dicom_filepath"), dicoms_out)
    write_parquet_atomic(excluded.sort("subject_id"), exclusions_out)
    status = dict(dicom_table.group_by("status").len().rows())
    log.info(
        "echo: %d studies in = %d kept + %d excluded; %d DICOMs in = %d used + %d skipped + %d excluded",
        n_studies,
        index.height,
        excluded.height,
        dicom_table.height,
        status.get("used", 0),
        status.get("skipped", 0),
        status.get("excluded", 0),
    )
