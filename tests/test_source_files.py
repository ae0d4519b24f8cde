"""The files the ECG and echo stages read (hftri_mimic/ingest/source_files.py): the list phase 2 of the download
fetches, the check that stops a real run on an incomplete download, and the `not_downloaded` exclusion a user may opt
into (docs/RUNNING.md, An incomplete download)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import base_config

from hftri_mimic.ecg.stage import process_shard, settings_from_config
from hftri_mimic.ingest.source_files import (
    MissingSourceFilesError,
    check_files_present,
    fetch_hint,
    planned_files,
    write_file_list,
)

ECG_PATHS = ["files/p1000/p10000032/s40689238/40689238", "files/p1001/p10010058/s40112345/40112345"]


def ecg_plan(path: Path) -> Path:
    plan = pl.DataFrame(
        {
            "subject_id": [10000032, 10010058],
            "ecg_study_id": [40689238, 40112345],
            "ecg_path": ECG_PATHS,
            "shard": [0, 0],
        }
    )
    plan.write_parquet(path)
    return path


def echo_plan(path: Path) -> Path:
    plan = pl.DataFrame(
        {
            "subject_id": [10002221, 10002221, 10003333],
            "echo_study_id": [94106955, 94106955, 95000000],
            "dicom_filepath": ["files/p10/p10002221/s94106955/94106955_0002.dcm",
                               "files/p10/p10002221/s94106955/94106955_0001.dcm", None],
            "shard": [0, 0, 0],
        }
    )  # fmt: skip
    plan.write_parquet(path)
    return path


def test_the_planned_files_are_each_records_header_and_data_and_each_dicom(tmp_path):
    assert planned_files(ecg_plan(tmp_path / "ecg.parquet"), "ecg") == sorted(
        f"{p}{suffix}" for p in ECG_PATHS for suffix in (".hea", ".dat")
    )
    dicoms = planned_files(echo_plan(tmp_path / "echo.parquet"), "echo")
    assert dicoms == [
        "files/p10/p10002221/s94106955/94106955_0001.dcm",
        "files/p10/p10002221/s94106955/94106955_0002.dcm",
    ]
    listed = tmp_path / "echo_files.txt"
    assert write_file_list(tmp_path / "echo.parquet", "echo", listed) == 2
    lines = [line for line in listed.read_text().splitlines() if not line.startswith("#")]
    assert lines == dicoms, "the download's file_list format: one relative path per line"


def write_files(root: Path, rels: list[str]) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def test_an_absent_file_stops_the_run_naming_count_and_list_but_no_path(tmp_path):
    plan, root = ecg_plan(tmp_path / "plan.parquet"), tmp_path / "ecg"
    wanted = planned_files(plan, "ecg")
    write_files(root, wanted[:-1])  # the last .hea is absent
    summary, missing = tmp_path / "source_files.json", tmp_path / "missing_files.txt"
    with pytest.raises(MissingSourceFilesError) as info:
        check_files_present(plan, "ecg", root, "source.ecg_root", "error", summary, missing)
    message = str(info.value)
    assert "1 of the 4 files the ecg stage reads are not under source.ecg_root" in message
    assert str(missing) in message and "snakemake download_cohort" in message and "missing_files: exclude" in message
    assert missing.read_text().split() == [wanted[-1]]
    assert wanted[-1] not in message and "40112345" not in message, "a patient path is printed"
    assert "files/p9999/p99999999/s99999999/99999999.hea" in message, "the masked shape helps without naming anyone"
    assert not summary.exists()


def test_with_exclude_the_check_passes_and_counts_the_absent(tmp_path):
    plan, root = echo_plan(tmp_path / "plan.parquet"), tmp_path / "echo"
    summary, missing = tmp_path / "source_files.json", tmp_path / "missing_files.txt"
    record = check_files_present(plan, "echo", root, "source.echo_root", "exclude", summary, missing)
    assert record == json.loads(summary.read_text()) == {
        "tree": "echo", "planned_files": 2, "absent": 2, "missing_files": "exclude"
    }  # fmt: skip
    write_files(root, planned_files(plan, "echo"))
    assert check_files_present(plan, "echo", root, "source.echo_root", "error", summary, missing)["absent"] == 0
    assert not missing.exists(), "a stale list of absent files is removed"


@pytest.mark.parametrize(("missing_files", "expected"), [(None, "missing_header"), ("exclude", "not_downloaded")])
def test_an_ecg_shard_excludes_an_absent_record_under_the_chosen_reason(tmp_path, missing_files, expected):
    settings = settings_from_config(base_config()["ecg"])
    out = tmp_path / "shard"
    process_shard(
        plan=ecg_plan(tmp_path / "plan.parquet"), shard=0, ecg_root=tmp_path / "empty", settings=settings,
        zarr_out=out / "0.zarr", measured_out=out / "0.measured.parquet", exclusions_out=out / "0.exclusions.parquet",
        zarr_relpath="ecg/shards/0.zarr", missing_files=missing_files,
    )  # fmt: skip
    excluded = pl.read_parquet(out / "0.exclusions.parquet")
    assert excluded["reason"].to_list() == [expected, expected]
    if missing_files:
        assert all(detail.startswith("missing_header") for detail in excluded["detail"]), "the reader's reason is kept"


def test_in_error_mode_an_ecg_shard_stops_on_an_absent_record(tmp_path):
    """The files check runs before the shards; a file that goes missing after it still stops the run."""
    out = tmp_path / "shard"
    with pytest.raises(MissingSourceFilesError, match="incomplete download") as info:
        process_shard(
            plan=ecg_plan(tmp_path / "plan.parquet"), shard=0, ecg_root=tmp_path / "empty",
            settings=settings_from_config(base_config()["ecg"]), zarr_out=out / "0.zarr",
            measured_out=out / "0.measured.parquet", exclusions_out=out / "0.exclusions.parquet",
            zarr_relpath="ecg/shards/0.zarr", missing_files="error",
        )  # fmt: skip
    assert "10000032" not in str(info.value) and "p99999999" in str(info.value)


def test_the_hint_names_the_download_that_brings_the_files():
    assert fetch_hint("source.ecg_root") == "`snakemake download_cohort`"
    assert "ptb-xl" in fetch_hint("ptbxl.root")
