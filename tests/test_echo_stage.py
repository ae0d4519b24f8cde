"""Echo stage through the workflow: faulty DICOMs are named, every DICOM is accounted for, and the demo
view classifier is good enough (its held-out accuracy is a workflow output)."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import polars as pl
import pydicom
import pytest
import zarr
from conftest import SMALL_DEMO, snakemake, write_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from hftri_mimic.demo.echo import synth_doppler_still, write_us_still
from hftri_mimic.echo.dicom import VIEWS


def write_structured_report(path) -> None:
    """A real non-image DICOM (Basic Text SR): no pixel data at all."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.PatientID = "0"
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.slow
def test_echo_faults_are_named_and_every_dicom_is_accounted_for(tmp_path):
    write_config(tmp_path, demo=SMALL_DEMO, echo={"shard_size": 6})
    snakemake(tmp_path, "--cores", "2", "results/cohort/cohort.parquet")
    out = tmp_path / "results"
    cohort = pl.read_parquet(out / "cohort/cohort.parquet")
    listing = pl.read_csv(out / "source/echo/echo-record-list.csv")
    truth = pl.read_parquet(out / "source_truth/echo_dicoms.parquet")
    faulty = set(truth.filter(pl.col("defect") != "none")["study_id"])  # the demo's own export faults
    studies = [s for s in cohort["echo_study_id"].to_list() if s not in faulty][:4]
    cines = {
        s: truth.filter(pl.col("study_id") == s, pl.col("view") != "still")["dicom_filepath"].to_list() for s in studies
    }
    root = out / "source/echo"
    truncated, report, missing = cines[studies[0]][0], cines[studies[1]][0], cines[studies[3]][0]
    data = (root / truncated).read_bytes()
    (root / truncated).write_bytes(data[: int(len(data) * 0.6)])
    write_structured_report(root / report)
    (root / missing).unlink()
    rng = np.random.default_rng(0)
    for path in cines[studies[2]]:  # a study of single-frame stills only
        write_us_still(
            root / path,
            synth_doppler_still(rng, height=128, width=160),
            subject_id=1,
            study_id=studies[2],
            acquisition_datetime=datetime(2150, 1, 1),
            instance_number=1,
        )

    snakemake(tmp_path, "--cores", "2", "dataset")

    dicoms = pl.read_parquet(out / "echo/dicoms.parquet")
    planned = listing.filter(pl.col("study_id").is_in(cohort["echo_study_id"].to_list()))
    assert dicoms.height == planned.height, "one row per DICOM of every cohort study"
    assert sorted(dicoms["dicom_filepath"]) == sorted(planned["dicom_filepath"])
    status = dicoms.group_by("status").len()
    assert set(status["status"]) <= {"used", "skipped", "excluded"} and status["len"].sum() == dicoms.height

    def outcome(path):
        row = dicoms.filter(pl.col("dicom_filepath") == path).row(0, named=True)
        return row["status"], row["reason"]

    assert outcome(truncated) == ("excluded", "truncated")
    assert outcome(report) == ("excluded", "not_ultrasound")
    assert outcome(missing) == ("excluded", "missing_file")
    assert {outcome(p) for p in cines[studies[2]]} == {("skipped", "single_frame")}

    exclusions = pl.read_parquet(out / "echo/exclusions.parquet")
    assert exclusions.filter(pl.col("echo_study_id") == studies[2])["reason"].to_list() == ["no_usable_cine"]
    # The demo's own faults: cut-off cines are excluded as truncated; a study whose every cine was cut is
    # excluded as a whole.
    natural = truth.filter(pl.col("defect") == "truncated", pl.col("study_id").is_in(cohort["echo_study_id"].to_list()))
    assert {outcome(p) for p in natural["dicom_filepath"]} <= {("excluded", "truncated")}
    cohort_cines = truth.filter(pl.col("view") != "still", pl.col("study_id").is_in(cohort["echo_study_id"].to_list()))
    all_cut = set(
        cohort_cines.group_by("study_id")
        .agg((pl.col("defect") == "truncated").all().alias("cut"))
        .filter("cut")["study_id"]
    )
    assert set(exclusions["echo_study_id"]) == all_cut | {studies[2]}
    index = pl.read_parquet(out / "echo/index.parquet")
    assert index.height + exclusions.height == cohort.height, "studies in = kept + excluded"
    attrition = pl.read_parquet(out / "hftri/attrition.parquet")
    echo_rows = attrition.filter(pl.col("reason").str.starts_with("Echo study"))
    assert echo_rows["excluded_subjects"].sum() == exclusions.height

    # Each kept view is the highest-probability cine of that view; its prediction mostly matches the truth.
    used = dicoms.filter(pl.col("status") == "used").join(truth.select("dicom_filepath", "view"), on="dicom_filepath")
    assert (used["predicted_view"] == used["view"]).mean() >= 0.9
    row = index.row(0, named=True)
    store = zarr.open_group(str(out / row["zarr_path"]), mode="r")
    assert store["echo"].shape[1:] == (11, 16, 64, 64, 3) and store["echo"].dtype == np.uint8
    present = store["view_present"][row["row"]]
    assert [v for v, p in zip(VIEWS, present, strict=True) if p] == row["views_present"]
    clip = store["echo"][row["row"]]
    assert all(clip[i].any() for i in np.flatnonzero(present)) and not clip[~present].any()

    metrics = json.loads((out / "echo/view_classifier.json").read_text())
    assert metrics["heldout_accuracy"] >= 0.9, f"demo view classifier held-out accuracy {metrics['heldout_accuracy']}"
    assert pydicom.dcmread(root / cines[studies[1]][1]).Modality == "US"
