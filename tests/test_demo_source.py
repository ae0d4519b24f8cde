"""The demo source has the real PhysioNet layouts: hosp tables like the MIMIC-IV demo, WFDB records
like MIMIC-IV-ECG, ultrasound DICOMs like MIMIC-IV-ECHO, and a planted signal that is only partial."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pydicom
import pytest
import wfdb
from pydicom.uid import JPEGBaseline8Bit
from reference_data import mimic_demo_hosp, mimic_ecg_header
from sklearn.metrics import roc_auc_score

from hftri_mimic.demo.generate import HOSP_TABLES, DemoSpec, generate_demo_source
from hftri_mimic.demo.records import ECHO_VIEWS

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"


@pytest.fixture(scope="module")
def hosp_only(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hosp_only")
    generate_demo_source(out / "source", out / "truth", DemoSpec(n_patients=400), write_signals=False)
    return out


@pytest.fixture(scope="module")
def with_signals(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("with_signals")
    spec = DemoSpec(n_patients=12, echo_height=64, echo_width=80, echo_frames=(4, 8))
    generate_demo_source(out / "source", out / "truth", spec, workers=1)
    return out


def inferred_types(path: Path) -> list[tuple[str, str]]:
    rows = duckdb.connect().execute(f"DESCRIBE SELECT * FROM read_csv_auto('{path}')").fetchall()
    return [(name, dtype) for name, dtype, *_ in rows]


@pytest.mark.parametrize("table", HOSP_TABLES)
def test_hosp_table_has_the_columns_and_types_of_the_real_mimic_demo(hosp_only, table):
    real = inferred_types(mimic_demo_hosp() / f"{table}.csv.gz")
    ours = inferred_types(hosp_only / "source/hosp" / f"{table}.csv.gz")
    assert ours == real, f"{table}: generated (name, DuckDB type) differ from MIMIC-IV demo: {ours} vs {real}"


def test_hosp_quirks_of_the_real_files_are_present(hosp_only):
    con = duckdb.connect()
    hosp = hosp_only / "source/hosp"
    null_hadm, total = con.execute(
        f"SELECT count(*) FILTER (WHERE hadm_id IS NULL), count(*) FROM read_csv_auto('{hosp}/labevents.csv.gz')"
    ).fetchone()
    assert 0 < null_hadm < total, "labevents must hold outpatient rows with a null hadm_id"
    assert (
        con.execute(
            f"SELECT count(*) FROM read_csv_auto('{hosp}/labevents.csv.gz') "
            "WHERE value IN ('<0.01', '___') AND valuenum IS NULL"
        ).fetchone()[0]
        > 0
    )
    assert (
        con.execute(
            f"SELECT count(*) FROM read_csv_auto('{hosp}/diagnoses_icd.csv.gz') WHERE icd_code LIKE '%.%'"
        ).fetchone()[0]
        == 0
    ), "MIMIC icd_code has no dots"
    assert con.execute(f"SELECT max(anchor_age) FROM read_csv_auto('{hosp}/patients.csv.gz')").fetchone()[0] == 91
    years = con.execute(
        f"SELECT min(year(admittime)), max(year(admittime)) FROM read_csv_auto('{hosp}/admissions.csv.gz')"
    ).fetchone()
    assert years[0] >= 2100 and years[1] <= 2210, f"dates must be shifted into 2100-2200, got {years}"
    omr = con.execute(f"SELECT DISTINCT result_name FROM read_csv_auto('{hosp}/omr.csv.gz')").fetchall()
    assert {"Height (Inches)", "Weight (Lbs)", "BMI (kg/m2)", "Blood Pressure"} <= {r[0] for r in omr}


def labevents_order(path: Path) -> dict[str, float]:
    """How a labevents.csv.gz is ordered: share of consecutive rows keeping or raising charttime's time of day,
    whether labevent_id counts up by subject then charttime, and whether the file is in labevent_id order."""
    rows = pl.read_csv(path, infer_schema_length=0).with_columns(
        pl.col("labevent_id", "subject_id", "specimen_id").cast(pl.Int64), pl.col("charttime").str.to_datetime()
    )
    minute = rows["charttime"].dt.hour().cast(pl.Int32) * 60 + rows["charttime"].dt.minute().cast(pl.Int32)
    by_id = rows.sort("labevent_id")
    specimens = (
        rows.with_row_index().group_by("specimen_id").agg(pl.col("index").max() - pl.col("index").min() + 1, pl.len())
    )
    return {
        "time_of_day_rising": float((minute.diff().drop_nulls() >= 0).mean()),
        "ids_follow_subject_and_time": by_id.select(pl.struct("subject_id", "charttime")).to_series().is_sorted(),
        "file_in_id_order": rows["labevent_id"].is_sorted(),
        "subject_runs_per_subject": (rows["subject_id"].rle_id().max() + 1) / rows["subject_id"].n_unique(),
        "specimens_together": float((specimens["index"] == specimens["len"]).mean()),
    }


def test_labevents_rows_come_in_the_real_files_order_not_labevent_ids(hosp_only):
    """MIMIC-IV's labevents.csv.gz runs by the time of day of charttime, subjects interleaved, specimens together;
    labevent_id counts by subject and charttime, so the file is not in id order. The demo writes the same order, so
    a reader that relies on sorted rows fails on it as it would on the real file."""
    real = labevents_order(mimic_demo_hosp() / "labevents.csv.gz")
    demo = labevents_order(hosp_only / "source/hosp/labevents.csv.gz")
    for order in (real, demo):
        assert order["time_of_day_rising"] > 0.95
        assert order["ids_follow_subject_and_time"] and not order["file_in_id_order"]
        assert order["subject_runs_per_subject"] > 10  # one subject's rows are spread over many runs
        assert order["specimens_together"] > 0.85


def test_generator_is_deterministic_for_a_seed(tmp_path):
    def digest(root: Path) -> dict[str, str]:
        return {
            p.name: hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
            for p in sorted((root / "hosp").glob("*.csv.gz"))
        }

    spec = DemoSpec(n_patients=30)
    generate_demo_source(tmp_path / "a", tmp_path / "ta", spec, write_signals=False)
    generate_demo_source(tmp_path / "b", tmp_path / "tb", spec, write_signals=False)
    generate_demo_source(tmp_path / "c", tmp_path / "tc", DemoSpec(n_patients=30, seed=7), write_signals=False)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["labevents.csv.gz"] != digest(tmp_path / "c")["labevents.csv.gz"]


def test_planted_lab_signal_is_informative_but_partial(hosp_only):
    """NT-proBNP tracks the lab component of heart failure: informative, never a perfect label."""
    truth = pl.read_parquet(hosp_only / "truth/patients.parquet")
    bnp = (
        pl.read_csv(hosp_only / "source/hosp/labevents.csv.gz", infer_schema_length=0)
        .filter(pl.col("itemid") == "50963", pl.col("valuenum") != "")
        .group_by(pl.col("subject_id").cast(pl.Int64))
        .agg(pl.col("valuenum").cast(pl.Float64).log().mean().alias("log_bnp"))
        .join(truth, on="subject_id")
    )
    auc = roc_auc_score(bnp["prevalent_hf"].to_numpy(), bnp["log_bnp"].to_numpy())
    assert 0.6 < auc < 0.9, f"NT-proBNP alone should be partly informative of HF, AUC={auc:.2f}"


def header_shape(line: str) -> str:
    """A header line with its numbers and names replaced by placeholders."""
    return re.sub(r"[A-Za-z]+\d*|-?\d+(\.\d+)?", "X", line.strip())


def test_wfdb_records_read_back_with_the_mimic_header_shape(with_signals):
    records = pl.read_csv(with_signals / "source/ecg/record_list.csv")
    assert records.columns == ["subject_id", "study_id", "file_name", "ecg_time", "path"]
    real_lines = mimic_ecg_header().read_text().splitlines()
    for row in records.head(5).iter_rows(named=True):
        path = with_signals / "source/ecg" / row["path"]
        assert re.fullmatch(
            rf"files/p{str(row['subject_id'])[:4]}/p{row['subject_id']}/s{row['study_id']}/"
            rf"{row['study_id']}",
            row["path"],
        )
        lines = Path(str(path) + ".hea").read_text().splitlines()
        assert [header_shape(x) for x in lines] == [header_shape(x) for x in real_lines]
        header = wfdb.rdheader(str(path))
        assert header.sig_name == ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
        assert (header.fs, header.sig_len, set(header.fmt), set(header.adc_gain)) == (500, 5000, {"16"}, {200.0})
        assert header.comments == [f"<subject_id>: {row['subject_id']}"]
        signal = wfdb.rdrecord(str(path)).p_signal
        assert signal.shape == (5000, 12) and np.isfinite(signal).all()


def test_dicoms_read_back_as_ultrasound_multiframe_jpeg_ybr(with_signals):
    listing = pl.read_csv(with_signals / "source/echo/echo-record-list.csv")
    assert listing.columns == ["subject_id", "study_id", "acquisition_datetime", "dicom_filepath"]
    truth = pl.read_parquet(with_signals / "truth/echo_dicoms.parquet")
    assert set(truth["view"]) - {"still"} <= set(ECHO_VIEWS)
    kinds = {"multi": 0, "still": 0, "regions": 0, "no_regions": 0}
    # The generator cuts a few files short on purpose (the echo stage's `truncated` exclusion): read the intact.
    truncated = set(truth.filter(defect="truncated")["dicom_filepath"])
    other_kinds = set(truth.filter(pl.col("encoding") != "jpeg_baseline")["dicom_filepath"])  # tested below
    intact = listing.filter(~pl.col("dicom_filepath").is_in(truncated | other_kinds))
    assert intact.height < listing.height or not truncated
    for row in intact.head(40).iter_rows(named=True):
        path = with_signals / "source/echo" / row["dicom_filepath"]
        assert re.fullmatch(
            rf"files/p{str(row['subject_id'])[:2]}/p{row['subject_id']}/s{row['study_id']}/"
            rf"{row['study_id']}_\d{{4}}\.dcm",
            row["dicom_filepath"],
        )
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.Modality == "US"
        frames = int(getattr(ds, "NumberOfFrames", 1))
        if ds.SOPClassUID == US_MULTIFRAME:
            kinds["multi"] += 1
            assert frames > 1 and float(ds.FrameTime) > 0
            assert ds.pixel_array.shape == (frames, ds.Rows, ds.Columns, 3)
            kinds["regions" if "SequenceOfUltrasoundRegions" in ds else "no_regions"] += 1
        else:
            assert ds.SOPClassUID == US_IMAGE and frames == 1
            kinds["still"] += 1
    assert kinds["multi"] and kinds["still"] and kinds["regions"], f"expected every kind of DICOM: {kinds}"


def test_ground_truth_lives_outside_the_source_tree(with_signals):
    source_files = {p.name for p in (with_signals / "source").rglob("*") if p.is_file()}
    assert not any(name.endswith(".parquet") for name in source_files)
    assert (with_signals / "truth/echo_dicoms.parquet").is_file()


@pytest.fixture(scope="module")
def at_scale(tmp_path_factory) -> tuple[Path, dict]:
    """Benchmark mode: 0.4% of MIMIC-IV v3.1's patients (1,459), tables only."""
    out = tmp_path_factory.mktemp("at_scale")
    counts = generate_demo_source(out / "source", out / "truth", DemoSpec(scale=0.004), write_signals=False)
    return out, counts


def test_scale_mode_writes_mimic_iv_v31_rows_per_patient(at_scale):
    from hftri_mimic.demo.calibrate import V31_ROWS, v31_rows

    out, counts = at_scale
    con = duckdb.connect()
    patients = con.execute(f"SELECT count(*) FROM read_csv_auto('{out}/source/hosp/patients.csv.gz')").fetchone()[0]
    assert patients == round(V31_ROWS["patients"] * 0.004)
    for table in ("admissions", "diagnoses_icd", "labevents", "omr", "prescriptions"):
        rows = con.execute(f"SELECT count(*) FROM read_csv_auto('{out}/source/hosp/{table}.csv.gz')").fetchone()[0]
        assert rows == counts[table]
        expected = V31_ROWS[table] * patients / V31_ROWS["patients"]
        assert abs(rows / expected - 1) < 0.01, f"{table}: {rows} rows, v3.1 has {expected:.0f} for {patients} patients"
    lists = {
        "ecg_records": f"{out}/source/ecg/record_list.csv",
        "echo_studies": f"{out}/source/echo/echo-study-list.csv",
        "echo_dicoms": f"{out}/source/echo/echo-record-list.csv",
    }
    for name, path in lists.items():
        rows = con.execute(f"SELECT count(*) FROM read_csv_auto('{path}')").fetchone()[0]
        assert rows == counts[name] == v31_rows(name, patients), f"{name}: {rows} rows"
    paths, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT dicom_filepath) FROM read_csv_auto('{lists['echo_dicoms']}')"
    ).fetchone()
    assert paths == distinct, "two DICOM rows share a file path"
    orphans = con.execute(
        f"SELECT count(*) FROM read_csv_auto('{lists['echo_dicoms']}') WHERE study_id NOT IN "
        f"(SELECT study_id FROM read_csv_auto('{lists['echo_studies']}'))"
    ).fetchone()[0]
    assert orphans == 0, "DICOMs of a study that is not in the study list"
    # Patients without any hospital admission exist (about 4 in 10 in v3.1), and keep their outpatient labs.
    without = con.execute(
        f"""SELECT count(*) FROM read_csv_auto('{out}/source/hosp/patients.csv.gz') p
            WHERE NOT EXISTS (SELECT 1 FROM read_csv_auto('{out}/source/hosp/admissions.csv.gz') a
                              WHERE a.subject_id = p.subject_id)"""
    ).fetchone()[0]
    assert 0.2 < without / patients < 0.5


def test_scale_mode_tables_ingest_whole_with_unique_ids_and_dangling_references_none(at_scale, tmp_path):
    from hftri_mimic.ingest.tables import ingest_table

    out, counts = at_scale
    for table in ("admissions", "diagnoses_icd", "labevents", "omr", "prescriptions"):
        kept = ingest_table(table, out / f"source/hosp/{table}.csv.gz", tmp_path / f"{table}.parquet")
        assert kept == counts[table], f"{table}: {counts[table] - kept} rows excluded at ingest"
    con = duckdb.connect()
    pq = {t: f"read_parquet('{tmp_path}/{t}.parquet')" for t in ("admissions", "diagnoses_icd", "labevents")}
    pq["prescriptions"] = f"read_parquet('{tmp_path}/prescriptions.parquet')"
    for table, key in (("labevents", "labevent_id"), ("prescriptions", "pharmacy_id"), ("admissions", "hadm_id")):
        distinct, total = con.execute(f"SELECT count(DISTINCT {key}), count(*) FROM {pq[table]}").fetchone()
        assert distinct == total, f"{table}.{key} repeats"
    duplicate_seq = con.execute(
        f"SELECT count(*) FROM (SELECT hadm_id, seq_num FROM {pq['diagnoses_icd']} GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()[0]
    assert duplicate_seq == 0
    for table in ("diagnoses_icd", "labevents", "prescriptions"):
        dangling = con.execute(
            f"SELECT count(*) FROM {pq[table]} t WHERE t.hadm_id IS NOT NULL "
            f"AND t.hadm_id NOT IN (SELECT hadm_id FROM {pq['admissions']})"
        ).fetchone()[0]
        assert dangling == 0, f"{dangling} {table} rows name an admission that does not exist"


@pytest.mark.parametrize("table", ["admissions", "diagnoses_icd", "labevents", "omr", "prescriptions"])
def test_scale_mode_tables_keep_the_real_column_types(at_scale, table):
    real = inferred_types(mimic_demo_hosp() / f"{table}.csv.gz")
    ours = inferred_types(at_scale[0] / "source/hosp" / f"{table}.csv.gz")
    assert ours == real, f"{table}: generated (name, DuckDB type) differ from MIMIC-IV demo: {ours} vs {real}"


def test_ecg_times_have_emergency_department_records_and_cart_clock_offsets(hosp_only):
    """As in MIMIC-IV-ECG: some ECGs are taken in the emergency department before admittime (never before the ED
    registration), and ecg_time is the cart's clock, off the hospital's for a share of the carts (one offset per cart,
    10 to 120 minutes either way), in the record list and the machine measurements alike."""
    source, truth = hosp_only / "source", hosp_only / "truth"
    records = pl.read_csv(source / "ecg/record_list.csv", try_parse_dates=True).select("study_id", "ecg_time")
    measured = pl.read_csv(source / "ecg/machine_measurements.csv", try_parse_dates=True).select(
        "study_id", "cart_id", pl.col("ecg_time").alias("machine_time")
    )
    true_times = pl.read_parquet(truth / "ecg_records.parquet").select("subject_id", "study_id", "true_ecg_time")
    ecgs = records.join(measured, on="study_id").join(true_times, on="study_id")
    assert ecgs.height == records.height
    assert (ecgs["ecg_time"] == ecgs["machine_time"]).all(), "record list and machine measurements share the clock"
    ecgs = ecgs.with_columns(offset_min=(pl.col("ecg_time") - pl.col("true_ecg_time")).dt.total_minutes())
    shifted = ecgs.filter(pl.col("offset_min") != 0)
    assert 0.04 < shifted.height / ecgs.height < 0.2, f"{shifted.height} of {ecgs.height} records with an offset"
    assert shifted["offset_min"].abs().is_between(10, 120).all()
    assert (shifted["offset_min"] < 0).any() and (shifted["offset_min"] > 0).any()
    per_cart = ecgs.group_by("cart_id").agg(pl.col("offset_min").n_unique().alias("n"))
    assert (per_cart["n"] == 1).all(), "a cart's clock has one offset"

    admissions = pl.read_csv(source / "hosp/admissions.csv.gz", try_parse_dates=True).select(
        "subject_id", "admittime", "edregtime"
    )
    ed = (
        ecgs.join(admissions, on="subject_id")
        .filter(pl.col("true_ecg_time").is_between(pl.col("admittime") - pl.duration(hours=6), pl.col("admittime"),
                                                   closed="left"))
    )  # fmt: skip
    assert ed.height > 10, "ED ECGs before admittime"
    through_ed = ed.filter(pl.col("edregtime").is_not_null())
    assert through_ed.height > 5 and (through_ed["true_ecg_time"] > through_ed["edregtime"]).all()


def test_echo_studies_hold_stills_and_dicoms_of_several_kinds_at_realistic_shares(hosp_only):
    """About 45% of MIMIC-IV-ECHO's files are stills (235,543 of 525,422); besides JPEG Baseline, RLE, uncompressed,
    JPEG 2000 and PALETTE COLOR files occur (hftri_mimic/demo/records.py DICOM_ENCODINGS)."""
    dicoms = pl.read_parquet(hosp_only / "truth/echo_dicoms.parquet")
    stills = dicoms.filter(pl.col("view") == "still")
    assert 0.38 < stills.height / dicoms.height < 0.52, stills.height / dicoms.height
    shares = dict(dicoms.group_by("encoding").len().with_columns(share=pl.col("len") / dicoms.height).select(
        "encoding", "share").rows())  # fmt: skip
    assert set(shares) == {"jpeg_baseline", "rle", "native", "jpeg2000", "palette"}
    assert 0.9 < shares["jpeg_baseline"] < 0.97
    assert set(dicoms.filter(pl.col("view") != "still")["encoding"]) == {"jpeg_baseline", "rle", "native", "jpeg2000"}


def test_every_demo_dicom_decodes_with_the_transfer_syntax_of_its_kind(with_signals):
    from hftri_mimic.echo.dicom import decode_frames

    syntax = {
        "jpeg_baseline": ("JPEG Baseline (Process 1)", "YBR_FULL_422"),
        "rle": ("RLE Lossless", "RGB"),
        "native": ("Explicit VR Little Endian", "RGB"),
        "jpeg2000": ("JPEG 2000 Image Compression (Lossless Only)", "RGB"),
        "palette": ("Explicit VR Little Endian", "PALETTE COLOR"),
    }
    dicoms = pl.read_parquet(with_signals / "truth/echo_dicoms.parquet").filter(pl.col("defect") == "none")
    assert dicoms.height > 100
    for row in dicoms.iter_rows(named=True):
        ds = pydicom.dcmread(with_signals / "source/echo" / row["dicom_filepath"])
        assert (ds.file_meta.TransferSyntaxUID.name, ds.PhotometricInterpretation) == syntax[row["encoding"]]
        assert decode_frames(ds, [0]).std() > 5
