"""MIMIC-IV-ECG and MIMIC-IV-ECHO record lists for the demo population, and the parameters of each
signal file (the planted ECG morphology and echo appearance), drawn vectorised.

Record lists reference every record; signal files are rendered separately (see ``generate``), possibly
only for a subset of subjects at benchmark scale.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from hftri_mimic.demo.population import CARDIAC, DAY, HOUR, POST, PopulationChunk, pick, text
from hftri_mimic.echo.dicom import VIEWS as ECHO_VIEWS

MINUTE = np.timedelta64(60, "s")
# Share of studies holding each view (A5C is missing for about 38% of patients in the paper).
VIEW_PRESENCE = (0.95, 0.93, 0.97, 0.62, 0.9, 0.88, 0.85, 0.97, 0.95, 0.8, 0.9)

ECG_DEFECTS = (("none", 0.97), ("flat_lead", 0.01), ("clipping", 0.01), ("noise", 0.01))
ECG_RECORD_LIST_COLUMNS = ["subject_id", "study_id", "file_name", "ecg_time", "path"]
MACHINE_MEASUREMENT_COLUMNS = (
    ["subject_id", "study_id", "cart_id", "ecg_time"]
    + [f"report_{i}" for i in range(18)]
    + [
        "bandwidth",
        "filtering",
        "rr_interval",
        "p_onset",
        "p_end",
        "qrs_onset",
        "qrs_end",
        "t_end",
        "p_axis",
        "qrs_axis",
        "t_axis",
    ]
)
ECHO_RECORD_LIST_COLUMNS = ["subject_id", "study_id", "acquisition_datetime", "dicom_filepath"]
ECHO_STUDY_LIST_COLUMNS = ["subject_id", "study_id", "study_datetime", "note_id", "note_seq", "note_charttime"]


def unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """n distinct random integers in [low, high)."""
    span = high - low
    if n > span:
        raise ValueError(f"cannot draw {n} distinct ids from a range of {span}")
    ids = rng.choice(span, size=n, replace=False) if span < 4 * n else np.unique(rng.integers(0, span, 2 * n + 16))
    ids = rng.permutation(ids)[:n]
    return low + ids


def _times_in(rng: np.random.Generator, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    span = (end - start) / np.timedelta64(1, "s")
    return (
        (start + (rng.random(len(start)) * span).astype("timedelta64[s]"))
        .astype("datetime64[m]")
        .astype("datetime64[ms]")
    )


def ecg_records(
    rng: np.random.Generator, pop: PopulationChunk, fraction: float, id_low: int, id_high: int
) -> pl.DataFrame:
    """One row per ECG: the record list columns plus the signal parameters (``_qrs_ms``, ``_t_amp``,
    ``_hr``) that carry the planted ECG signal of the patient's ``c_ecg`` component."""
    adm = pop.admissions
    n = pop.patients.height
    has_ecg = rng.random(n) < fraction
    pidx_adm = adm["_pidx"].to_numpy()
    role = adm["_role"].to_numpy()
    admit, disch = adm["admittime"].to_numpy(), adm["dischtime"].to_numpy()

    per_adm = np.where(role == CARDIAC, 1 + rng.poisson(0.9, adm.height), (rng.random(adm.height) < 0.5).astype(int))
    per_adm = np.where(has_ecg[pidx_adm], per_adm, 0)
    src = np.repeat(np.arange(adm.height), per_adm)
    times = [_times_in(rng, admit[src], disch[src])]
    pidx = [pidx_adm[src]]
    # Emergency-department ECGs shortly before admission (inside the window only with an offset or start_from
    # edregtime): after the ED registration when the admission came through the ED.
    ed = (role == CARDIAC) & has_ecg[pidx_adm] & (rng.random(adm.height) < 0.15)
    ed_times = (admit[ed] - rng.integers(60, 360, ed.sum()) * MINUTE).astype("datetime64[ms]")
    edreg = adm["edregtime"].to_numpy()[ed].astype("datetime64[ms]")
    admit_ed = admit[ed].astype("datetime64[ms]")
    after_registration = ~np.isnat(edreg) & (edreg + 5 * MINUTE < admit_ed)  # room for an ED ECG before admittime
    times.append(np.where(after_registration, np.maximum(ed_times, edreg + 5 * MINUTE), ed_times))
    pidx.append(pidx_adm[ed])
    # Outpatient ECGs, away from any admission.
    cardiac = adm.filter(pl.col("_role") == CARDIAC)
    c_pidx = cardiac["_pidx"].to_numpy()
    n_out = np.where(has_ecg[c_pidx], rng.poisson(0.7, len(c_pidx)), 0)
    out_src = np.repeat(np.arange(len(c_pidx)), n_out)
    times.append(
        (cardiac["admittime"].to_numpy()[out_src] - rng.integers(20, 700, len(out_src)) * DAY).astype("datetime64[ms]")
    )
    pidx.append(c_pidx[out_src])

    pidx_all = np.concatenate(pidx)
    k = len(pidx_all)
    subject = pop.patients["subject_id"].to_numpy()[pidx_all]
    study = unique_ids(rng, k, id_low, id_high)
    c_ecg = pop.patients["_c_ecg"].to_numpy()[pidx_all]
    observed = c_ecg + rng.normal(0, 0.25, k)  # record-to-record variation of the same heart
    frame = pl.DataFrame(
        {
            "subject_id": subject,
            "study_id": study,
            "ecg_time": np.concatenate(times).astype("datetime64[ms]"),
            "_qrs_ms": np.clip(96 + 22 * observed, 70, 180),
            "_t_amp": np.clip(0.95 - 0.45 * observed, -0.9, 1.5),
            "_hr": np.clip(rng.normal(74, 11, k) + 4 * observed, 45, 130),
            # Recording faults seen in real archives (lead off, saturation, electrode motion): ~3%.
            "_defect": pick(rng, ECG_DEFECTS, k),
        }
    ).sort(["subject_id", "ecg_time"])
    return frame.with_columns(
        file_name=pl.col("study_id").cast(pl.String),
        path=pl.format(
            "files/p{}/p{}/s{}/{}",
            pl.col("subject_id").cast(pl.String).str.slice(0, 4),
            pl.col("subject_id"),
            pl.col("study_id"),
            pl.col("study_id"),
        ),
    )


# Machine clocks: MIMIC-IV-ECG's ecg_time is the cart's own clock, not synchronised with the hospital's. The demo gives
# this share of its carts (cart_id 6000-6899) a fixed offset of 10 to 120 minutes, either way (our assumption of a
# realistic share; it moves records near an admission's ends across the window boundary).
CLOCK_OFFSET_CART_SHARE = 0.1
CART_IDS = (6000, 6900)


def cart_clock_offsets(seed: int) -> dict[int, np.timedelta64]:
    """cart_id -> the offset of its clock (machine time - hospital time), for the carts whose clock is off."""
    rng = np.random.default_rng([seed, 4])
    carts = np.arange(*CART_IDS)
    off = carts[rng.random(len(carts)) < CLOCK_OFFSET_CART_SHARE]
    minutes = rng.integers(10, 121, len(off)) * rng.choice([-1, 1], len(off))
    return {int(c): np.timedelta64(int(m), "m") for c, m in zip(off, minutes, strict=True)}


def apply_clock_offsets(
    ecgs: pl.DataFrame, measurements: pl.DataFrame, offsets: dict[int, np.timedelta64]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """ecg_time as the cart's clock wrote it (record list, machine measurements, WFDB header); the hospital-clock time
    stays in ``_true_ecg_time`` for the ground truth."""
    minutes = measurements["cart_id"].replace_strict(
        {c: int(o / np.timedelta64(1, "m")) for c, o in offsets.items()}, default=0, return_dtype=pl.Int64
    )
    shift = pl.duration(minutes=minutes)
    ecgs = ecgs.with_columns(_true_ecg_time=pl.col("ecg_time"), ecg_time=pl.col("ecg_time") + shift)
    return ecgs, measurements.with_columns(ecg_time=pl.col("ecg_time") + shift)


def machine_measurements(rng: np.random.Generator, ecgs: pl.DataFrame) -> pl.DataFrame:
    """The cart's automatic measurements and free-text statements, as in machine_measurements.csv."""
    k = ecgs.height
    qrs = ecgs["_qrs_ms"].to_numpy()
    hr = ecgs["_hr"].to_numpy()
    t_amp = ecgs["_t_amp"].to_numpy()
    rr = np.round(60000 / hr).astype(int)
    p_onset = rng.integers(20, 60, k)
    p_end = p_onset + rng.integers(90, 120, k)
    qrs_onset = p_end + rng.integers(40, 80, k)
    qrs_end = qrs_onset + np.round(qrs).astype(int)
    t_end = qrs_end + rng.integers(250, 330, k)
    rhythm = np.where(hr > 100, "Sinus tachycardia", np.where(hr < 60, "Sinus bradycardia", "Sinus rhythm"))
    statement = np.where(
        qrs > 120, "Left bundle branch block", np.where(t_amp < 0.2, "Nonspecific T wave abnormality", "Normal ECG")
    )
    reports = {f"report_{i}": text([None] * k) for i in range(18)}
    reports["report_0"] = text(rhythm.astype(object))
    reports["report_1"] = text(statement.astype(object))
    reports["report_2"] = text(np.where(statement == "Normal ECG", None, "Abnormal ECG"))
    frame = pl.DataFrame(
        {
            "subject_id": ecgs["subject_id"],
            "study_id": ecgs["study_id"],
            "cart_id": rng.integers(6000, 6900, k),
            "ecg_time": ecgs["ecg_time"],
            **reports,
            "bandwidth": "0.5-150 Hz",
            "filtering": "60 Hz notch Baseline filter",
            "rr_interval": rr,
            "p_onset": p_onset,
            "p_end": p_end,
            "qrs_onset": qrs_onset,
            "qrs_end": qrs_end,
            "t_end": t_end,
            "p_axis": rng.integers(-30, 90, k),
            "qrs_axis": rng.integers(-60, 110, k),
            "t_axis": rng.integers(-60, 120, k),
        }
    )
    return frame.select(MACHINE_MEASUREMENT_COLUMNS)


def echo_studies(
    rng: np.random.Generator, pop: PopulationChunk, fraction: float, id_low: int, id_high: int
) -> pl.DataFrame:
    """One row per echo study: the study-list columns plus the study's planted appearance
    (``_lv_scale`` larger and ``_wall_motion`` smaller with the patient's ``c_echo`` component)."""
    adm = pop.admissions
    n = pop.patients.height
    has_echo = rng.random(n) < fraction
    pidx_adm = adm["_pidx"].to_numpy()
    role = adm["_role"].to_numpy()
    admit, disch = adm["admittime"].to_numpy(), adm["dischtime"].to_numpy()
    per_adm = np.where(
        role == CARDIAC, 1 + (rng.random(adm.height) < 0.1), (role == POST) & (rng.random(adm.height) < 0.15)
    ).astype(int)
    per_adm = np.where(has_echo[pidx_adm], per_adm, 0)
    src = np.repeat(np.arange(adm.height), per_adm)
    times = [_times_in(rng, admit[src] + HOUR, np.maximum(disch[src] - HOUR, admit[src] + 2 * HOUR))]
    pidx = [pidx_adm[src]]
    cardiac = adm.filter(pl.col("_role") == CARDIAC)
    c_pidx = cardiac["_pidx"].to_numpy()
    outpatient = has_echo[c_pidx] & (rng.random(len(c_pidx)) < 0.2)
    times.append(
        (cardiac["admittime"].to_numpy()[outpatient] - rng.integers(40, 500, outpatient.sum()) * DAY).astype(
            "datetime64[ms]"
        )
    )
    pidx.append(c_pidx[outpatient])

    pidx_all = np.concatenate(pidx)
    k = len(pidx_all)
    study_time = np.concatenate(times).astype("datetime64[ms]")
    subject = pop.patients["subject_id"].to_numpy()[pidx_all]
    observed = pop.patients["_c_echo"].to_numpy()[pidx_all] + rng.normal(0, 0.2, k)
    has_note = rng.random(k) < 0.7
    note_seq = rng.integers(1, 80, k)
    frame = pl.DataFrame(
        {
            "subject_id": subject,
            "study_id": unique_ids(rng, k, id_low, id_high),
            "study_datetime": study_time,
            "note_id": text(
                np.where(has_note, np.char.add(np.char.add(subject.astype(str), "-EC-"), note_seq.astype(str)), None)
            ),
            "note_seq": pl.Series(np.where(has_note, note_seq, np.nan), nan_to_null=True).cast(pl.Int64),
            "note_charttime": pl.Series(
                np.where(
                    has_note, study_time.astype("datetime64[D]").astype("datetime64[ms]"), np.datetime64("NaT")
                ).astype("datetime64[ms]")
            ),
            "_lv_scale": np.clip(1.05 + 0.18 * observed, 0.7, 1.7),
            "_wall_motion": np.clip(0.2 - 0.06 * observed, 0.03, 0.35),
            "_hr": np.clip(rng.normal(74, 11, k), 45, 130),
        }
    ).sort(["subject_id", "study_datetime"])
    return frame


# Stills per study: 1 + Poisson(STILLS_POISSON), so that about 45% of the DICOMs are stills, as in MIMIC-IV-ECHO
# (235,543 of 525,422 files are single-frame).
STILLS_POISSON = 9.0
# How each DICOM's pixels are stored, by kind (demo/echo.py ENCODINGS). MIMIC-IV-ECHO's GE files are JPEG Baseline;
# the shares of the other kinds are our assumption (they may occur, and each must decode or be skipped by name).
DICOM_ENCODINGS = {
    "cine": (("jpeg_baseline", 0.97), ("rle", 0.01), ("native", 0.01), ("jpeg2000", 0.01)),
    "still": (("jpeg_baseline", 0.9), ("palette", 0.05), ("rle", 0.02), ("native", 0.01), ("jpeg2000", 0.02)),
}


def echo_dicoms(
    rng: np.random.Generator,
    studies: pl.DataFrame,
    frames_range: tuple[int, int],
    encoding_rng: np.random.Generator | None = None,
) -> pl.DataFrame:
    """One row per DICOM of each study: cines of the views the study holds (some twice) and spectral
    Doppler stills, in scan order, with the truth columns ``_view`` (``still`` for stills),
    ``_n_frames``, ``_frame_time_ms``, ``_with_regions``, ``_defect`` (``truncated`` or ``none``) and ``_encoding``
    (drawn from ``encoding_rng``, default a generator of its own, by ``DICOM_ENCODINGS``)."""
    k = studies.height
    broken = rng.random(k) < 0.01
    n_views = len(ECHO_VIEWS)
    present = rng.random((k, n_views)) < np.array(VIEW_PRESENCE)
    copies = np.where(present, 1 + (rng.random((k, n_views)) < 0.3), 0)
    study_idx, view_idx = np.nonzero(copies)
    reps = copies[study_idx, view_idx]
    study_idx = np.repeat(study_idx, reps)
    view = np.array(ECHO_VIEWS, dtype=object)[np.repeat(view_idx, reps)]
    n_still = 1 + rng.poisson(STILLS_POISSON, k)
    still_study = np.repeat(np.arange(k), n_still)
    study_idx = np.concatenate([study_idx, still_study])
    view = np.concatenate([view, np.full(len(still_study), "still", dtype=object)])
    order = np.lexsort((rng.random(len(study_idx)), study_idx))
    study_idx, view = study_idx[order], view[order]
    m = len(study_idx)
    instance = np.ones(m, dtype=int)
    starts = np.r_[0, np.flatnonzero(np.diff(study_idx)) + 1]
    counts = np.diff(np.r_[starts, m])
    instance = np.arange(m) - np.repeat(starts, counts) + 1

    subject = studies["subject_id"].to_numpy()[study_idx]
    study = studies["study_id"].to_numpy()[study_idx]
    acquired = studies["study_datetime"].to_numpy()[study_idx] + instance * rng.integers(20, 60, m) * np.timedelta64(
        1, "s"
    )
    is_still = view == "still"
    lo, hi = frames_range
    n_frames = np.where(is_still, 1, rng.integers(lo, hi + 1, m))
    frame_time = pick(rng, ((33.333, 0.6), (20.0, 0.25), (16.667, 0.15)), m).astype(float)
    frame = pl.DataFrame(
        {
            "subject_id": subject,
            "study_id": study,
            "acquisition_datetime": acquired.astype("datetime64[ms]"),
            "_instance": instance,
            "_view": text(view),
            "_n_frames": n_frames,
            "_frame_time_ms": frame_time,
            "_with_regions": rng.random(m) < 0.9,
            # Export faults seen in real archives: a few cut-off files, and rare studies whose every
            # cine was cut (the paper excluded 4 echo studies); stills are left intact.
            "_defect": np.where((view != "still") & ((rng.random(m) < 0.007) | broken[study_idx]), "truncated", "none"),
            "_lv_scale": studies["_lv_scale"].to_numpy()[study_idx],
            "_wall_motion": studies["_wall_motion"].to_numpy()[study_idx],
            "_hr": studies["_hr"].to_numpy()[study_idx],
        }
    )
    encoding_rng = encoding_rng or np.random.default_rng(0)
    encoding = np.where(
        is_still, pick(encoding_rng, DICOM_ENCODINGS["still"], m), pick(encoding_rng, DICOM_ENCODINGS["cine"], m)
    )
    return frame.with_columns(_encoding=text(encoding.astype(object)), dicom_filepath=dicom_filepath())


def dicom_filepath() -> pl.Expr:
    """MIMIC-IV-ECHO's ``files/p{first 2 digits}/p{subject}/s{study}/{study}_{NNNN}.dcm`` from ``subject_id``,
    ``study_id`` and ``_instance``."""
    return pl.format(
        "files/p{}/p{}/s{}/{}_{}.dcm",
        pl.col("subject_id").cast(pl.String).str.slice(0, 2),
        pl.col("subject_id"),
        pl.col("study_id"),
        pl.col("study_id"),
        pl.col("_instance").cast(pl.String).str.zfill(4),
    )
