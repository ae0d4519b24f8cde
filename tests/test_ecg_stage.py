"""ECG stage through the workflow: every defect is excluded with its reason, nothing is lost."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zarr
from conftest import SMALL_DEMO, snakemake, write_config

from hftri_mimic.demo.ecg import MIMIC_LEADS, synth_ecg
from hftri_mimic.demo.generate import apply_ecg_defect
from hftri_mimic.ecg.signal import ST_MEM_LEADS

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import wfdb


def rewrite(
    record: Path,
    signal_mv: np.ndarray | None = None,
    fs: int = 500,
    digital: np.ndarray | None = None,
    names: list[str] | None = None,
) -> None:
    """Replace a record with another one of the same name (fmt 16, gain 200)."""
    for suffix in (".hea", ".dat"):
        record.with_suffix(suffix).unlink(missing_ok=True)
    if digital is None:
        digital = np.clip(np.round(signal_mv * 200), -32767, 32767).astype(np.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wfdb.wrsamp(
            record.name,
            fs=fs,
            units=["mV"] * 12,
            sig_name=names or list(MIMIC_LEADS),
            d_signal=digital,
            fmt=["16"] * 12,
            adc_gain=[200.0] * 12,
            baseline=[0] * 12,
            write_dir=str(record.parent),
        )


def inject(kind: str, record: Path, rng: np.random.Generator) -> None:
    clean = synth_ecg(rng, qrs_ms=95, t_amp=1.0, hr_bpm=72)
    if kind == "missing_header":  # the whole record is gone: its header is the first thing missing
        record.with_suffix(".hea").unlink()
        record.with_suffix(".dat").unlink()
    elif kind == "missing_data":
        record.with_suffix(".dat").unlink()
    elif kind == "unreadable":
        record.with_suffix(".hea").write_text("this is not a WFDB header\n")
    elif kind == "truncated":
        data = record.with_suffix(".dat").read_bytes()
        record.with_suffix(".dat").write_bytes(data[: len(data) // 2])
    elif kind == "missing_lead":
        rewrite(record, clean, names=[*MIMIC_LEADS[:8], "V7", *MIMIC_LEADS[9:]])
    elif kind == "too_short":
        rewrite(record, clean[:4000])
    elif kind == "low_sampling_rate":
        rewrite(record, clean[::5][:2000], fs=100)
    elif kind == "nan":
        digital = np.round(clean * 200).astype(np.int16)
        digital[100:200, 3] = -32768  # WFDB's missing-sample marker for format 16
        rewrite(record, digital=digital)
    elif kind == "flat_lead":
        rewrite(record, apply_ecg_defect(clean, "flat_lead", rng))
    elif kind == "clipping":
        rewrite(record, apply_ecg_defect(clean, "clipping", rng))
    elif kind == "low_quality":
        rewrite(record, apply_ecg_defect(clean, "noise", rng))


FAULTS = [
    "missing_header",
    "missing_data",
    "unreadable",
    "truncated",
    "missing_lead",
    "too_short",
    "low_sampling_rate",
    "nan",
    "flat_lead",
    "clipping",
    "low_quality",
]


@pytest.mark.slow
def test_each_ecg_defect_is_excluded_with_its_reason_and_counts_reconcile(tmp_path):
    write_config(tmp_path, demo=SMALL_DEMO, ecg={"shard_size": 8})
    snakemake(tmp_path, "--cores", "2", "results/cohort/cohort.parquet")
    out = tmp_path / "results"
    cohort = pl.read_parquet(out / "cohort/cohort.parquet")
    truth = pl.read_parquet(out / "source_truth/ecg_records.parquet").select(
        pl.col("study_id").alias("ecg_study_id"), "defect"
    )
    clean = cohort.join(truth, on="ecg_study_id").filter(pl.col("defect") == "none")
    assert clean.height > len(FAULTS), "the small demo must have enough clean ECGs to corrupt"
    rng = np.random.default_rng(0)
    injected = {}
    for kind, row in zip(FAULTS, clean.head(len(FAULTS)).iter_rows(named=True), strict=True):
        inject(kind, out / "source/ecg" / row["ecg_path"], rng)
        injected[row["ecg_study_id"]] = kind

    snakemake(tmp_path, "--cores", "2", "dataset")

    plan = pl.read_parquet(out / "ecg/plan.parquet")
    index = pl.read_parquet(out / "ecg/index.parquet")
    exclusions = pl.read_parquet(out / "ecg/exclusions.parquet")
    assert plan.height == cohort.height == index.height + exclusions.height, "records in != kept + excluded"
    assert set(index["ecg_study_id"]).isdisjoint(exclusions["ecg_study_id"])
    reasons = dict(zip(exclusions["ecg_study_id"], exclusions["reason"], strict=True))
    for study, kind in injected.items():
        assert reasons.get(study) == kind, f"record with {kind} was {reasons.get(study, 'kept')}"
    natural = exclusions.filter(~pl.col("ecg_study_id").is_in(list(injected))).join(truth, on="ecg_study_id")
    assert (natural["defect"] != "none").all(), f"clean demo ECGs were excluded: {natural}"

    attrition = pl.read_parquet(out / "hftri/attrition.parquet")
    ecg_rows = attrition.filter(pl.col("reason").str.starts_with("ECG:"))
    assert ecg_rows["excluded_subjects"].sum() == exclusions["subject_id"].n_unique()
    # the echo stage's exclusions (a demo study may have no usable cine) follow the ECG rows
    echo_excluded = set(pl.read_parquet(out / "echo/exclusions.parquet")["subject_id"])
    excluded = set(exclusions["subject_id"]) | echo_excluded
    assert attrition["n_subjects"][-1] == cohort.height - len(excluded)

    # Kept signals are in the store at the indexed row, in ST-MEM lead order, 250 Hz x 10 s. The store holds
    # every measured record (kept or excluded by a threshold), so that a threshold change re-reads nothing.
    first = index.row(0, named=True)
    store = zarr.open_group(str(out / first["zarr_path"]), mode="r")
    assert store.attrs["leads"] == list(ST_MEM_LEADS)
    assert not set(store.attrs["settings"]) & {"min_fs", "clip_fraction", "flat_std_mv", "quality_min"}
    measured = pl.read_parquet(out / f"ecg/shards/{first['shard']}.measured.parquet")
    assert store["ecg"].shape == (measured.height, 12, 2500) and store["ecg"].dtype == np.float32
    assert np.isfinite(store["ecg"][first["row"]]).all()

    # Loosen every threshold: only the collect job reruns, and the records the thresholds excluded come back
    # with their stored signals; the structural defects stay excluded.
    shards = sorted((out / "ecg/shards").glob("*.measured.parquet"))
    shard_times = [p.stat().st_mtime_ns for p in shards]
    loose = {"min_fs": 50, "clip_fraction": 1.0, "flat_std_mv": 0.0, "quality_min": "Unacceptable"}
    write_config(tmp_path, demo=SMALL_DEMO, ecg={"shard_size": 8, **loose})
    snakemake(tmp_path, "--cores", "2", "results/ecg/index.parquet")
    assert [p.stat().st_mtime_ns for p in shards] == shard_times, "a threshold change reran a shard job"
    loose_index = pl.read_parquet(out / "ecg/index.parquet")
    loose_reasons = dict(pl.read_parquet(out / "ecg/exclusions.parquet").select("ecg_study_id", "reason").rows())
    thresholded = {"low_sampling_rate", "clipping", "flat_lead", "low_quality"}
    for study, kind in injected.items():
        if kind in thresholded:
            assert study in set(loose_index["ecg_study_id"]), f"{kind} record still excluded with loose thresholds"
        else:
            assert loose_reasons.get(study) == kind, f"{kind} record: {loose_reasons.get(study, 'kept')}"
    back = loose_index.filter(pl.col("ecg_study_id").is_in([s for s, k in injected.items() if k in thresholded]))
    for rec in back.iter_rows(named=True):
        signal = zarr.open_group(str(out / rec["zarr_path"]), mode="r")["ecg"][rec["row"]]
        assert signal.shape == (12, 2500) and np.isfinite(signal).all()
    assert loose_index.join(index, on="ecg_study_id").filter(pl.col("row") != pl.col("row_right")).is_empty()
