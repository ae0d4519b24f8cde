"""Write the demo source: the three PhysioNet trees (MIMIC-IV hosp, MIMIC-IV-ECG, MIMIC-IV-ECHO) and,
in a separate folder, the ground truth that only tests and the demo view-classifier training read.

Layout written under ``source_dir`` (the same as a real download, so that downstream code never knows
which source it reads)::

    hosp/{patients,admissions,diagnoses_icd,d_icd_diagnoses,labevents,d_labitems,omr,prescriptions}.csv.gz
    ecg/record_list.csv, ecg/machine_measurements.csv, ecg/files/p1000/p10000032/s40689238/40689238.{hea,dat}
    echo/echo-record-list.csv, echo/echo-study-list.csv, echo/files/p10/p10002221/s94106955/94106955_0001.dcm

Patients are drawn in chunks with their own seeded generator, so memory stays bounded at MIMIC-IV size.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from hftri_mimic.demo import hosp, records
from hftri_mimic.demo.calibrate import calibrate_chunk, keep_records, more_dicoms, v31_rows
from hftri_mimic.demo.population import CARDIAC, draw_population
from hftri_mimic.ingest.tables import HOSP_TABLES

log = logging.getLogger(__name__)

MIMIC_PATIENTS_V31 = 364_627
CHUNK_PATIENTS = 40_000
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class DemoSpec:
    """What to generate (the ``demo`` block of config.yaml)."""

    n_patients: int = 240
    seed: int = 20251
    scale: float | None = None
    signal_subjects: int = 200
    ecg_fraction: float = 0.95
    echo_fraction: float = 0.9
    echo_height: int = 128
    echo_width: int = 160
    echo_frames: tuple[int, int] = (18, 40)

    @property
    def total_patients(self) -> int:
        return self.n_patients if self.scale is None else max(10, round(MIMIC_PATIENTS_V31 * self.scale))


class CsvGzAppender:
    """Appends polars frames to one csv.gz file, writing the header once (MIMIC's value formats)."""

    def __init__(self, path: Path, compresslevel: int = 4) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The file stays open across write() calls and is closed by close().
        if path.suffix == ".gz":
            self._file = gzip.open(path, "wb", compresslevel=compresslevel)  # noqa: SIM115
        else:
            self._file = open(path, "wb")  # noqa: SIM115
        self._header = True

    def write(self, frame: pl.DataFrame) -> None:
        frame.write_csv(
            self._file,
            include_header=self._header,
            datetime_format=DATETIME_FORMAT,
            date_format="%Y-%m-%d",
            null_value="",
            quote_style="necessary",
        )
        self._header = False

    def close(self) -> None:
        self._file.close()


def generate_demo_source(
    source_dir: Path | str, truth_dir: Path | str, spec: DemoSpec, workers: int = 1, write_signals: bool = True
) -> dict:
    """Write the demo source and its ground truth; return a summary of counts.

    ``write_signals=False`` writes tables and record lists only (fast checks of the hosp layout).
    """
    t0 = time.perf_counter()
    source_dir, truth_dir = Path(source_dir), Path(truth_dir)
    truth_dir.mkdir(parents=True, exist_ok=True)
    total = spec.total_patients
    n_chunks = max(1, -(-total // CHUNK_PATIENTS))
    hosp_out = {
        t: CsvGzAppender(source_dir / "hosp" / f"{t}.csv.gz")
        for t in HOSP_TABLES
        if t not in ("d_icd_diagnoses", "d_labitems")
    }
    ecg_list = CsvGzAppender(source_dir / "ecg" / "record_list.csv")
    ecg_mm = CsvGzAppender(source_dir / "ecg" / "machine_measurements.csv")
    echo_list = CsvGzAppender(source_dir / "echo" / "echo-record-list.csv")
    echo_studies_out = CsvGzAppender(source_dir / "echo" / "echo-study-list.csv")
    truth_patients, truth_ecg, truth_dicoms = [], [], []
    counts = dict.fromkeys(HOSP_TABLES, 0) | {"ecg_records": 0, "echo_studies": 0, "echo_dicoms": 0}
    next_labevent_id, next_pharmacy_id = 1, 1
    ecg_span, echo_span = 10_000_000 // n_chunks, 10_000_000 // n_chunks
    cart_offsets = records.cart_clock_offsets(spec.seed)
    for chunk in tqdm(range(n_chunks), desc="demo hosp tables", unit="chunk", disable=n_chunks == 1):
        n = min(CHUNK_PATIENTS, total - chunk * CHUNK_PATIENTS)
        rng = np.random.default_rng([spec.seed, chunk])
        pop = draw_population(
            rng,
            n,
            first_subject_id=10_000_000 + chunk * CHUNK_PATIENTS * 24,
            first_hadm_id=20_000_000 + chunk * CHUNK_PATIENTS * 60,
        )
        history = hosp.history_flags(rng, pop)
        tables = {
            "patients": hosp.patients_table(pop),
            "admissions": hosp.admissions_table(pop),
            "diagnoses_icd": hosp.diagnoses_table(rng, pop, history),
            "labevents": hosp.labevents_table(rng, pop, next_labevent_id),
            "omr": hosp.omr_table(rng, pop),
            "prescriptions": hosp.prescriptions_table(rng, pop, next_pharmacy_id),
        }
        # Benchmark sources (scale mode): MIMIC-IV v3.1's rows per patient, drawn from a stream of their own.
        calibration_rng = np.random.default_rng([spec.seed, chunk, 3])
        if spec.scale is not None:
            tables = calibrate_chunk(calibration_rng, tables)
        next_labevent_id += tables["labevents"].height
        next_pharmacy_id += tables["prescriptions"].height
        for name, frame in tables.items():
            hosp_out[name].write(frame)
            counts[name] += frame.height

        ecgs = records.ecg_records(
            rng, pop, spec.ecg_fraction, 40_000_000 + chunk * ecg_span, 40_000_000 + (chunk + 1) * ecg_span
        )
        if spec.scale is not None:  # scale mode: the real archives' records per patient
            ecgs = keep_records(calibration_rng, ecgs, v31_rows("ecg_records", n))
        measurements = records.machine_measurements(rng, ecgs)
        ecgs, measurements = records.apply_clock_offsets(ecgs, measurements, cart_offsets)
        ecg_list.write(ecgs.select(records.ECG_RECORD_LIST_COLUMNS))
        ecg_mm.write(measurements)
        studies = records.echo_studies(
            rng, pop, spec.echo_fraction, 90_000_000 + chunk * echo_span, 90_000_000 + (chunk + 1) * echo_span
        )
        if spec.scale is not None:
            studies = keep_records(calibration_rng, studies, v31_rows("echo_studies", n))
        dicoms = records.echo_dicoms(rng, studies, spec.echo_frames, np.random.default_rng([spec.seed, chunk, 5]))
        if spec.scale is not None:
            dicoms = more_dicoms(calibration_rng, dicoms, v31_rows("echo_dicoms", n))
        echo_studies_out.write(studies.select(records.ECHO_STUDY_LIST_COLUMNS))
        echo_list.write(dicoms.select(records.ECHO_RECORD_LIST_COLUMNS))
        counts["ecg_records"] += ecgs.height
        counts["echo_studies"] += studies.height
        counts["echo_dicoms"] += dicoms.height

        truth_patients.append(_patient_truth(pop, history))
        truth_ecg.append(
            ecgs.select(
                "subject_id", "study_id", "ecg_time", "_true_ecg_time", "path", "_qrs_ms", "_t_amp", "_hr", "_defect"
            )
        )
        truth_dicoms.append(dicoms)
    for appender in (*hosp_out.values(), ecg_list, ecg_mm, echo_list, echo_studies_out):
        appender.close()
    for name, frame in (("d_icd_diagnoses", hosp.d_icd_diagnoses_table()), ("d_labitems", hosp.d_labitems_table())):
        appender = CsvGzAppender(source_dir / "hosp" / f"{name}.csv.gz")
        appender.write(frame)
        appender.close()
        counts[name] = frame.height

    patients_truth = pl.concat(truth_patients)
    ecg_truth = pl.concat(truth_ecg).rename(lambda c: c.lstrip("_"))
    dicom_truth = pl.concat(truth_dicoms).rename(lambda c: c.lstrip("_"))
    signal_subjects = _signal_subjects(patients_truth, spec)
    ecg_truth = ecg_truth.with_columns(has_file=pl.col("subject_id").is_in(signal_subjects.to_list()))
    dicom_truth = dicom_truth.with_columns(has_file=pl.col("subject_id").is_in(signal_subjects.to_list()))
    patients_truth.write_parquet(truth_dir / "patients.parquet")
    ecg_truth.write_parquet(truth_dir / "ecg_records.parquet")
    dicom_truth.write_parquet(truth_dir / "echo_dicoms.parquet")

    if write_signals:
        write_signal_files(source_dir, ecg_truth.filter("has_file"), dicom_truth.filter("has_file"), spec, workers)
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("demo source: %s", ", ".join(f"{k}={v}" for k, v in counts.items()))
    return counts


def _patient_truth(pop, history: np.ndarray) -> pl.DataFrame:
    from hftri_mimic.demo.vocab import HISTORY

    cardiac = pop.admissions.filter(pl.col("_role") == CARDIAC).select(
        "subject_id", pl.col("hadm_id").alias("cardiac_hadm_id")
    )
    truth = pop.patients.select(
        "subject_id",
        pl.col("_c_lab").alias("c_lab"),
        pl.col("_c_ecg").alias("c_ecg"),
        pl.col("_c_echo").alias("c_echo"),
        pl.col("_prevalent_hf").alias("prevalent_hf"),
        pl.col("_incident_score").alias("incident_score"),
        pl.col("_true_age").alias("true_age"),
        pl.col("_race").alias("race"),
    ).with_columns([pl.Series(f"history_{name}", history[:, g]) for g, (name, *_) in enumerate(HISTORY)])
    return truth.join(cardiac, on="subject_id", how="left")


def _signal_subjects(patients_truth: pl.DataFrame, spec: DemoSpec) -> pl.Series:
    """Subjects whose ECG/echo files are written: all in the demo, the first N at benchmark scale."""
    if spec.scale is None:
        return patients_truth["subject_id"]
    return patients_truth["subject_id"].head(spec.signal_subjects)


def write_signal_files(
    source_dir: Path, ecgs: pl.DataFrame, dicoms: pl.DataFrame, spec: DemoSpec, workers: int
) -> None:
    """Render every WFDB record and DICOM in parallel; each file's content depends only on the seed
    and its own ids, so the result does not depend on the number of workers."""
    ecg_jobs = [(source_dir / "ecg", spec.seed, r) for r in ecgs.iter_rows(named=True)]
    echo_jobs = [
        (source_dir / "echo", spec.seed, spec.echo_height, spec.echo_width, r) for r in dicoms.iter_rows(named=True)
    ]
    workers = max(1, workers)
    chunk = 16
    if workers == 1:
        for job in tqdm(ecg_jobs, desc="demo ECG records", unit="rec", mininterval=10):
            _write_ecg(job)
        for job in tqdm(echo_jobs, desc="demo echo DICOMs", unit="dcm", mininterval=10):
            _write_dicom(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(
            pool.map(_write_ecg, ecg_jobs, chunksize=chunk),
            total=len(ecg_jobs),
            desc="demo ECG records",
            unit="rec",
            mininterval=10,
        ):
            pass
        for _ in tqdm(
            pool.map(_write_dicom, echo_jobs, chunksize=chunk),
            total=len(echo_jobs),
            desc="demo echo DICOMs",
            unit="dcm",
            mininterval=10,
        ):
            pass


def ecg_record_rng(seed: int, study_id: int) -> np.random.Generator:
    """The generator one demo ECG record is drawn from (``hftri_mimic.demo.ecg.qrs_windows`` replays it)."""
    return np.random.default_rng([seed, 1, study_id])


def _write_ecg(job: tuple) -> None:
    from hftri_mimic.demo.ecg import synth_ecg, write_mimic_ecg_record

    ecg_root, seed, row = job
    rng = ecg_record_rng(seed, row["study_id"])
    signal = apply_ecg_defect(
        synth_ecg(rng, qrs_ms=row["qrs_ms"], t_amp=row["t_amp"], hr_bpm=row["hr"]), row["defect"], rng
    )
    record_dir = ecg_root / os.path.dirname(row["path"])
    write_mimic_ecg_record(
        record_dir, study_id=row["study_id"], subject_id=row["subject_id"], signal_mv=signal, ecg_time=row["ecg_time"]
    )


def apply_ecg_defect(signal_mv: np.ndarray, defect: str, rng: np.random.Generator) -> np.ndarray:
    """A recording fault on a (n, 12) mV signal: a lead off (flat), a lead driven into the ADC limits for
    a tenth of the record (clipping), or electrode-motion noise swamping every lead."""
    signal = signal_mv.copy()
    lead = int(rng.integers(0, signal.shape[1]))
    if defect == "flat_lead":
        signal[:, lead] = 0.0
    elif defect == "clipping":
        start = int(rng.integers(0, signal.shape[0] * 9 // 10))
        signal[start : start + signal.shape[0] // 10, lead] = 200.0  # beyond +163.8 mV, the 16-bit limit at gain 200
    elif defect == "noise":
        signal += (
            rng.normal(0.0, 1.5, signal.shape) + 2.0 * np.sin(np.linspace(0, 60 * np.pi, signal.shape[0]))[:, None]
        )
    return signal


def _write_dicom(job: tuple) -> None:
    from hftri_mimic.demo.echo import synth_cine, synth_doppler_still, write_us_multiframe, write_us_still

    echo_root, seed, height, width, row = job
    rng = np.random.default_rng([seed, 2, row["study_id"], row["instance"]])
    path = echo_root / row["dicom_filepath"]
    common = dict(
        subject_id=row["subject_id"],
        study_id=row["study_id"],
        acquisition_datetime=row["acquisition_datetime"],
        instance_number=row["instance"],
    )
    common["encoding"] = row["encoding"]
    if row["view"] == "still":
        write_us_still(path, synth_doppler_still(rng, height=height, width=width), **common)
        return
    frames = synth_cine(
        rng,
        view=row["view"],
        n_frames=row["n_frames"],
        height=height,
        width=width,
        lv_scale=row["lv_scale"],
        wall_motion=row["wall_motion"],
        hr_bpm=row["hr"],
        frame_time_ms=row["frame_time_ms"],
    )
    write_us_multiframe(path, frames, frame_time_ms=row["frame_time_ms"], with_regions=row["with_regions"], **common)
    if row["defect"] == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
