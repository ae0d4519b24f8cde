"""Synthetic 12-lead ECGs written as MIMIC-IV-ECG WFDB records (demo source).

The heart is a single moving dipole ``d(t) = (x, y, z)`` in mV (x: patient's left, y: inferior,
z: anterior). Each beat is a sum of P, Q, R, S and T waves; every wave is a (possibly
asymmetric) Gaussian in time times a fixed 3-D direction. Leads are projections of the dipole:
I and II are projected, III, aVR, aVL and aVF are derived from them by Einthoven's and
Goldberger's relations (so those hold exactly before noise), V1-V6 have their own lead vectors,
chosen so that R grows from V1 to V5.

Planted signal: ``qrs_ms`` widens the Q, R and S waves (and lengthens QT by the same amount);
``t_amp`` scales the leftward/anterior part of the T vector, so T flattens (0) or inverts (< 0)
in I, aVL and V4-V6 while staying small and upright in the inferior leads until ``t_amp`` < 0.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import wfdb

# Storage order in MIMIC-IV-ECG (note aVF before aVL).
MIMIC_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")

GAIN_ADU_PER_MV = 200.0

# --- beat template, times in ms relative to the QRS onset of the beat -------------------------
_FIRST_QRS_ONSET_MS = 200.0  # QRS onset of the first full beat (P onset at 40 ms, as in MIMIC)
_PR_MS = 160.0  # P onset -> QRS onset
_P_DUR_MS = 100.0  # P onset -> P end (= 5 sigma of the P Gaussian)
_EDGE_SIGMAS = 2.5  # a wave's onset/end lies this many sigmas from its peak
_QRS_SHAPE = {  # wave: (peak as fraction of the QRS width, sigma as fraction of the QRS width)
    "Q": (0.20, 0.08),
    "R": (0.50, 0.11),
    "S": (0.80, 0.08),
}
_T_SIGMA_LEFT, _T_SIGMA_RIGHT = (
    0.15,
    0.10,
)  # T sigmas as fractions of QT (slow rise, fast fall)

# --- wave dipole directions (mV): x left, y inferior, z anterior --------------------------------
_P_VEC = np.array([0.08, 0.14, 0.03])
_Q_VEC = np.array([-0.15, 0.02, 0.25])  # septal: rightward and anterior
_R_VEC = np.array([0.80, 0.62, 0.10])  # main: leftward and inferior
_S_VEC = np.array([0.05, -0.15, -0.60])  # terminal: superior and posterior
_T_LATERAL = np.array([0.18, 0.0, 0.25])  # scaled by t_amp
_T_INFERIOR = np.array([0.0, 0.25, 0.0])  # scaled by (1 + t_amp) / 2

# --- lead vectors --------------------------------------------------------------------------------
_LEAD_I = np.array([1.0, 0.0, 0.0])
_LEAD_II = np.array([0.5, np.sqrt(3.0) / 2.0, 0.0])


def _precordial_vectors() -> np.ndarray:
    """Lead vectors of V1-V6, shape (6, 3): angle in the transverse plane and a gain."""
    angle_deg = np.array([125.0, 100.0, 66.0, 50.0, 20.0, 0.0])  # 0 = left, 90 = anterior
    gain = np.array([1.0, 1.6, 1.8, 1.9, 1.9, 1.5])
    a = np.deg2rad(angle_deg)
    return gain[:, None] * np.stack([np.cos(a), np.full(6, 0.1), np.sin(a)], axis=1)


_PRECORDIAL = _precordial_vectors()


def _check_rate_and_width(qrs_ms: float, hr_bpm: float, fs: int) -> None:
    if not 20.0 <= hr_bpm <= 250.0:
        raise ValueError(f"hr_bpm must be in [20, 250], got {hr_bpm}")
    if not 40.0 <= qrs_ms <= 250.0:
        raise ValueError(f"qrs_ms must be in [40, 250], got {qrs_ms}")
    if fs <= 0:
        raise ValueError(f"fs must be positive, got {fs}")


def _qt_ms(qrs_ms: float, rr_ms: float) -> float:
    """QT (QRS onset -> T end) in ms: Bazett-like 400 ms * sqrt(RR in s), plus the QRS widening."""
    return 400.0 * np.sqrt(rr_ms / 1000.0) + (qrs_ms - 90.0)


def _t_vector(t_amp: float) -> np.ndarray:
    return t_amp * _T_LATERAL + 0.5 * (1.0 + t_amp) * _T_INFERIOR


def _waves(qrs_ms: float, rr_ms: float, t_amp: float) -> tuple[np.ndarray, ...]:
    """Beat template.

    Returns (peak_ms, sigma_left_ms, sigma_right_ms, vectors) for the waves P, Q, R, S, T:
    shapes (5,), (5,), (5,), (5, 3); peaks are relative to the QRS onset.
    """
    qt = _qt_ms(qrs_ms, rr_ms)
    p_sigma = _P_DUR_MS / (2 * _EDGE_SIGMAS)
    t_right = _T_SIGMA_RIGHT * qt
    peak = [-_PR_MS + _P_DUR_MS / 2]
    left = [p_sigma]
    right = [p_sigma]
    for frac_peak, frac_sigma in _QRS_SHAPE.values():
        peak.append(frac_peak * qrs_ms)
        left.append(frac_sigma * qrs_ms)
        right.append(frac_sigma * qrs_ms)
    peak.append(qt - _EDGE_SIGMAS * t_right)
    left.append(_T_SIGMA_LEFT * qt)
    right.append(t_right)
    vectors = np.stack([_P_VEC, _Q_VEC, _R_VEC, _S_VEC, _t_vector(t_amp)])
    return np.array(peak), np.array(left), np.array(right), vectors


def _project(dipole: np.ndarray) -> np.ndarray:
    """Dipole (n, 3) -> 12 leads (n, 12) in MIMIC_LEADS order; limb leads obey Einthoven."""
    lead_i = dipole @ _LEAD_I
    lead_ii = dipole @ _LEAD_II
    limb = np.stack(
        [
            lead_i,
            lead_ii,
            lead_ii - lead_i,  # III
            -(lead_i + lead_ii) / 2.0,  # aVR
            lead_ii - lead_i / 2.0,  # aVF
            lead_i - lead_ii / 2.0,  # aVL
        ],
        axis=1,
    )
    return np.concatenate([limb, dipole @ _PRECORDIAL.T], axis=1)


def _beat_onsets(rng: np.random.Generator, rr_ms: float, duration_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """QRS onsets (ms from record start): one beat before the first full one, then jittered RR intervals.
    Returns (onsets, rr); the first draws ``synth_ecg`` takes from ``rng``."""
    n_after = int(np.ceil((duration_ms - _FIRST_QRS_ONSET_MS) / (0.9 * rr_ms))) + 2
    rr = rr_ms * np.clip(1.0 + 0.02 * rng.standard_normal(n_after), 0.92, 1.08)
    onsets = _FIRST_QRS_ONSET_MS + np.concatenate([[-rr_ms, 0.0], np.cumsum(rr[:-1])])
    return onsets, rr


def qrs_windows(
    rng: np.random.Generator, *, qrs_ms: float, hr_bpm: float, fs: int = 500, n_samples: int = 5000
) -> np.ndarray:
    """(n_beats, 2) QRS [onset, end) in ms of every beat of the record ``synth_ecg`` draws from an ``rng`` in the
    same state (the planted QRS width, where it lies in time); beats outside the record are clipped away."""
    _check_rate_and_width(qrs_ms, hr_bpm, fs)
    duration_ms = n_samples * 1000.0 / fs
    onsets, _ = _beat_onsets(rng, 60_000.0 / hr_bpm, duration_ms)
    windows = np.stack([onsets, onsets + qrs_ms], axis=1).clip(0.0, duration_ms)
    return windows[windows[:, 1] > windows[:, 0]]


def qrs_t_windows(
    rng: np.random.Generator, *, qrs_ms: float, hr_bpm: float, fs: int = 500, n_samples: int = 5000
) -> np.ndarray:
    """(n_beats, 2) [QRS onset, T end) in ms of every beat of the record ``synth_ecg`` draws from an ``rng`` in the
    same state: the part of each beat that carries the planted signal (QRS width and T-wave amplitude). T end is
    the beat's onset + QT of the template (``ecg_intervals``' t_end for the first beat); beats outside the record
    are clipped away."""
    _check_rate_and_width(qrs_ms, hr_bpm, fs)
    duration_ms = n_samples * 1000.0 / fs
    rr_ms = 60_000.0 / hr_bpm
    onsets, _ = _beat_onsets(rng, rr_ms, duration_ms)
    windows = np.stack([onsets, onsets + _qt_ms(qrs_ms, rr_ms)], axis=1).clip(0.0, duration_ms)
    return windows[windows[:, 1] > windows[:, 0]]


def synth_ecg(
    rng: np.random.Generator,
    *,
    qrs_ms: float,
    t_amp: float,
    hr_bpm: float,
    fs: int = 500,
    n_samples: int = 5000,
    noise_mv: float = 0.02,
    wander_mv: float = 0.1,
) -> np.ndarray:
    """Synthetic 12-lead ECG in mV, shape (n_samples, 12), columns in MIMIC_LEADS order.

    qrs_ms: QRS duration (about 90 normal, 120-160 bundle branch block / heart failure).
    t_amp: T-wave scale; 1.0 gives an upright T of about 0.3 mV in II, 0 a flat and < 0 an
        inverted T in I, aVL and V4-V6.
    hr_bpm: mean heart rate; each RR interval after the first beat varies by about 2 % (rng).
    noise_mv: standard deviation of white Gaussian noise added to every lead.
    wander_mv: amplitude (at most) of a sinusoidal baseline wander below 0.5 Hz per lead.

    The first full beat has its QRS onset at 200 ms (see ``ecg_intervals``); a preceding beat
    is included so the record starts mid-cycle. Deterministic for a given ``rng`` state.
    Returns float64, shape (n_samples, 12).
    """
    _check_rate_and_width(qrs_ms, hr_bpm, fs)
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    rr_ms = 60_000.0 / hr_bpm
    peak, sig_l, sig_r, vectors = _waves(qrs_ms, rr_ms, t_amp)

    onsets, rr = _beat_onsets(rng, rr_ms, n_samples * 1000.0 / fs)
    beat_gain = np.clip(1.0 + 0.03 * rng.standard_normal(onsets.size), 0.9, 1.1)

    # Each sample only sees the beats whose waves can reach it: K neighbours around the
    # latest onset, so memory is O(n_samples), not O(n_samples * n_beats).
    t = np.arange(n_samples) * (1000.0 / fs)  # (n,)
    reach_before = -(peak - 4 * sig_l).min()  # ms a beat's waves start before its onset
    reach_after = (peak + 4 * sig_r).max()  # ms they last after it
    rr_min = rr.min(initial=rr_ms)
    back = int(np.ceil(reach_after / rr_min)) + 1
    ahead = int(np.ceil(reach_before / rr_min)) + 1
    latest = np.searchsorted(onsets, t, side="right") - 1  # (n,)
    idx = latest[:, None] + np.arange(-back, ahead + 1)[None, :]  # (n, K)
    valid = (idx >= 0) & (idx < onsets.size)
    idx = np.clip(idx, 0, onsets.size - 1)
    dt = t[:, None, None] - onsets[idx][:, :, None] - peak[None, None, :]  # (n, K, 5)
    sigma = np.where(dt < 0, sig_l, sig_r)
    g = np.exp(-0.5 * (dt / sigma) ** 2) * (beat_gain[idx] * valid)[:, :, None]
    dipole = np.einsum("nkw,wd->nd", g, vectors)  # (n, 3)
    ecg = _project(dipole)  # (n, 12)

    noise = noise_mv * rng.standard_normal((n_samples, len(MIMIC_LEADS)))
    freq_hz = rng.uniform(0.1, 0.45)  # respiration-like, common to all leads
    phase = rng.uniform(0.0, 2 * np.pi, len(MIMIC_LEADS))
    amp = wander_mv * rng.uniform(0.5, 1.0, len(MIMIC_LEADS))
    wander = amp * np.sin(2 * np.pi * freq_hz * t[:, None] / 1000.0 + phase)
    return ecg + noise + wander


def ecg_intervals(qrs_ms: float, hr_bpm: float, fs: int = 500, *, t_amp: float = 1.0) -> dict[str, int]:
    """Machine measurements of the first full beat of ``synth_ecg`` (as machine_measurements.csv).

    rr_interval, p_onset, p_end, qrs_onset, qrs_end, t_end: ms (onsets/ends from record start,
    rounded to the sampling grid of ``fs``); p_axis, qrs_axis, t_axis: frontal-plane axes in
    degrees (hexaxial convention: 0 = lead I, +90 = aVF), from the wave areas of the template.
    ``t_axis`` depends on ``t_amp`` (default: a normal T).
    """
    _check_rate_and_width(qrs_ms, hr_bpm, fs)
    qrs_ms, t_amp = float(qrs_ms), float(t_amp)
    rr_ms = 60_000.0 / float(hr_bpm)
    q0 = _FIRST_QRS_ONSET_MS

    def on_grid(ms: float) -> int:
        return round(round(ms * fs / 1000.0) * 1000.0 / fs)

    _, sig_l, sig_r, vectors = _waves(qrs_ms, rr_ms, t_amp)
    area = vectors * (np.sqrt(np.pi / 2) * (sig_l + sig_r))[:, None]  # (5, 3)

    def axis(v: np.ndarray) -> int:
        return round(float(np.degrees(np.arctan2(v[1], v[0]))))

    return {
        "rr_interval": round(rr_ms),
        "p_onset": on_grid(q0 - _PR_MS),
        "p_end": on_grid(q0 - _PR_MS + _P_DUR_MS),
        "qrs_onset": on_grid(q0),
        "qrs_end": on_grid(q0 + qrs_ms),
        "t_end": on_grid(q0 + _qt_ms(qrs_ms, rr_ms)),
        "p_axis": axis(area[0]),
        "qrs_axis": axis(area[1:4].sum(axis=0)),
        "t_axis": axis(area[4]),
    }


def _header_text(study_id: int, fs: int, d_signal: np.ndarray, ecg_time: datetime, subject_id: int) -> str:
    """The .hea text in MIMIC-IV-ECG's exact layout (d_signal: (n, 12) int16 ADC units)."""
    n = d_signal.shape[0]
    checksum = d_signal.astype(np.int64).sum(axis=0) % 65536  # unsigned 16-bit, as MIMIC stores
    lines = [f"{study_id} {len(MIMIC_LEADS)} {fs} {n} {ecg_time:%H:%M:%S} {ecg_time:%d/%m/%Y}"]
    for j, name in enumerate(MIMIC_LEADS):
        lines.append(
            f"{study_id}.dat 16 {GAIN_ADU_PER_MV:.1f}(0)/mV 16 0 {int(d_signal[0, j])} {int(checksum[j])} 0 {name}"
        )
    lines.append(f"# <subject_id>: {subject_id}")
    return "\n".join(lines) + "\n"


def write_mimic_ecg_record(
    record_dir: Path,
    *,
    study_id: int,
    subject_id: int,
    signal_mv: np.ndarray,
    ecg_time: datetime,
    fs: int = 500,
) -> None:
    """Write {record_dir}/{study_id}.hea and .dat exactly in the MIMIC-IV-ECG format.

    signal_mv: (n_samples, 12) in mV, columns in MIMIC_LEADS order. Stored as format 16 with
    gain 200 adu/mV, baseline 0 (values clipped to +-32767 adu, i.e. +-163.8 mV). The header is
    MIMIC's layout: record line with HH:MM:SS and DD/MM/YYYY, signal lines
    ``{study}.dat 16 200.0(0)/mV 16 0 <init> <checksum> 0 <lead>``, and ``# <subject_id>: <id>``.
    """
    signal_mv = np.asarray(signal_mv, dtype=np.float64)
    if signal_mv.ndim != 2 or signal_mv.shape[1] != len(MIMIC_LEADS):
        raise ValueError(f"signal_mv must have shape (n, {len(MIMIC_LEADS)}), got {signal_mv.shape}")
    if not np.isfinite(signal_mv).all():
        raise ValueError("signal_mv contains NaN or inf")
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    ecg_time = ecg_time.replace(microsecond=0)
    # -32768 is WFDB's missing-sample marker in format 16, so clip to +-32767.
    d_signal = np.clip(np.round(signal_mv * GAIN_ADU_PER_MV), -32767, 32767).astype(np.int16)
    n_leads = len(MIMIC_LEADS)
    wfdb.wrsamp(
        str(study_id),
        fs=fs,
        units=["mV"] * n_leads,
        sig_name=list(MIMIC_LEADS),
        d_signal=d_signal,
        fmt=["16"] * n_leads,
        adc_gain=[GAIN_ADU_PER_MV] * n_leads,
        baseline=[0] * n_leads,
        comments=[f"<subject_id>: {subject_id}"],
        base_time=ecg_time.time(),
        base_date=ecg_time.date(),
        write_dir=str(record_dir),
    )
    # wfdb's header layout varies between versions; write MIMIC's exact layout ourselves.
    (record_dir / f"{study_id}.hea").write_text(
        _header_text(study_id, fs, d_signal, ecg_time, subject_id), encoding="ascii"
    )
