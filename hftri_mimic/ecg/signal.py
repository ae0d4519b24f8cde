"""12-lead ECGs from WFDB records as ST-MEM expects them (docs/SIGNALS.md, ECG).

One record in, either a ``ProcessedEcg`` ((12, 2500) float32 mV at 250 Hz, leads in ST-MEM's order
I, II, III, aVR, aVL, aVF, V1-V6) or an ``EcgExclusion`` whose ``reason`` is a key of
``EXCLUSION_REASONS``. Leads are matched by name, case-insensitively (MIMIC-IV-ECG stores aVF before
aVL; PTB writes lower-case names); other channels (e.g. Frank leads) are never read.

Checks run in this fixed order and the first that fails names the exclusion:

 1. ``missing_header``     the .hea file does not exist.
 2. ``unreadable``         the header cannot be parsed, is multi-segment or gives no signal length.
 3. ``missing_lead``       one of the 12 leads is not among the signal names.
 4. ``unreadable``         a needed lead has an unknown format, a non-positive gain, units other than
                           V/mV/uV, or several samples per frame.
 5. ``low_sampling_rate``  fs < ``min_fs``.
 6. ``too_short``          the header's length is below ``duration_s`` (round(duration_s * fs) samples).
 7. ``missing_data``       a data file holding a needed lead does not exist.
 8. ``truncated``          such a file is smaller than its header implies (formats 8/16/24/32/61/80/160/
                           212 exactly, 310/311 at least; FLAC formats are not size-checked).
 9. ``unreadable``         wfdb fails to read the first ``duration_s`` seconds (any exception).
10. ``truncated``          wfdb returned fewer samples than asked for.
11. ``nan``                a needed lead holds WFDB's missing-sample value (NaN in physical units).
12. ``clipping``           a lead has >= ``clip_fraction`` of its samples at the ADC limits.
13. ``flat_lead``          a lead's raw standard deviation over the kept segment < ``flat_std_mv``.
14. ``low_quality``        after preprocessing, the worst neurokit2 quality level over
                           ``quality_leads`` is below ``quality_min``.

Checks 1-8 need only the header and file sizes; from 9 on only the first ``duration_s`` seconds of the
12 leads are read, kept and checked.

Measure once, select cheaply: checks 5, 12, 13 and 14 compare a measurement with a threshold
(``THRESHOLDS``). ``measure_record`` runs every other check and returns the processed signal with its
measurements whatever the thresholds; ``threshold_exclusion`` applies the thresholds to the measurements;
``process_record`` is the two together. The workflow's shard jobs measure, and a cheap selection job
applies the thresholds, so moving a threshold never re-reads a record. A record that fails a check after 5
carries its sampling rate (``EcgExclusion.fs_in``), so that a rate below ``min_fs`` still names it
``low_sampling_rate``, as the fixed order says.
Preprocessing: FFT resampling (``scipy.signal.resample``) to ``target_fs`` when the rate differs, then
Butterworth high-pass ``highpass_hz`` and low-pass ``lowpass_hz`` (order ``filter_order`` each), both
zero-phase (``sosfiltfilt``). Cropping and standardisation belong to the model's input transform.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal

from hftri_mimic.common.exclusions import RecordExclusion


@contextmanager
def _quiet_wfdb() -> Iterator[None]:
    """Silence the pandas deprecation warnings that wfdb triggers on import and read (only wfdb's)."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=r"wfdb(\.|$)")
        yield


with _quiet_wfdb():
    import wfdb
    import wfdb.io._signal

# rdrecord's own reader of single-segment data (see _read_digital); None if a wfdb release drops it.
_RD_SEGMENT = getattr(wfdb.io._signal, "_rd_segment", None)

ST_MEM_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

EXCLUSION_REASONS: dict[str, str] = {
    "missing_header": "WFDB header (.hea) not found",
    "missing_data": "WFDB data file (.dat) not found",
    "unreadable": "header or data cannot be parsed",
    "truncated": "data file shorter than the header says",
    "missing_lead": "a required lead is absent",
    "too_short": "shorter than the required duration",
    "low_sampling_rate": "sampling rate below the minimum",
    "nan": "missing samples (NaN)",
    "flat_lead": "a lead is flat",
    "clipping": "samples at the ADC limits",
    "low_quality": "signal quality below threshold",
    # not a reader's reason: an absent file of a real tree, when source.missing_files is exclude (ecg/stage.py)
    "not_downloaded": "file not downloaded (source.missing_files: exclude)",
}

# The EcgSettings fields that only select records (``threshold_exclusion``); changing them re-reads nothing.
THRESHOLDS: tuple[str, ...] = ("min_fs", "clip_fraction", "flat_std_mv", "quality_min")
# What ``measure_record`` reports of every record it could read, whatever the thresholds.
MEASUREMENTS: tuple[str, ...] = (
    "fs_in",
    "duration_in_s",
    "min_lead_std_mv",
    "flattest_lead",
    "max_clip_fraction",
    "max_clip_lead",
    "quality",
    "quality_score",
)

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz

# neurokit2's zhao2018 levels, worst first; the index is the numeric score.
QUALITY_LEVELS: tuple[str, ...] = ("Unacceptable", "Barely acceptable", "Excellent")
_ZHAO_METHODS = ("zhao2018", "zhao", "SQI")  # neurokit2's names for the method that returns these levels
NOT_ASSESSED = "not assessed"  # quality when ``quality_leads`` is empty (score NaN)

# WFDB storage formats: bits per sample (the most negative value marks a missing sample) and
# (bytes, samples) per packed group of the formats whose file size follows from the length.
_FMT_BITS = {
    "8": 8,
    "80": 8,
    "16": 16,
    "61": 16,
    "160": 16,
    "212": 12,
    "310": 10,
    "311": 10,
    "24": 24,
    "32": 32,
    "508": 8,
    "516": 16,
    "524": 24,
}
_FMT_PACKING = {
    "8": (1, 1),
    "80": (1, 1),
    "16": (2, 1),
    "61": (2, 1),
    "160": (2, 1),
    "212": (3, 2),
    "310": (4, 3),
    "311": (4, 3),
    "24": (3, 1),
    "32": (4, 1),
}
_FMT_EXACT_SIZE = {"8", "80", "16", "61", "160", "212", "24", "32"}  # others: a lower bound only
_UNIT_TO_MV = {"mv": 1.0, "v": 1000.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3}


@dataclass(frozen=True)
class EcgSettings:
    """Everything that decides whether and how a record is processed (config ``ecg:``).

    ``THRESHOLDS`` name the fields that only select records (min_fs, clip_fraction, flat_std_mv,
    quality_min); the others change the stored signal or its measurements.
    """

    target_fs: int = 250
    duration_s: float = 10.0
    min_fs: int = 250
    highpass_hz: float = 0.67
    lowpass_hz: float = 40.0
    filter_order: int = 5
    flat_std_mv: float = 0.01  # a lead whose raw std (over the kept duration_s) is below this is flat
    clip_fraction: float = 0.01  # exclusion when this fraction of a lead's samples sit at the ADC limits
    quality_method: str = "zhao2018"  # neurokit2 ecg_quality method (one returning QUALITY_LEVELS)
    quality_leads: tuple[str, ...] = ("II",)  # empty: quality not assessed, never 'low_quality'
    quality_min: str = "Barely acceptable"  # zhao2018 levels: Unacceptable < Barely acceptable < Excellent

    def __post_init__(self) -> None:
        object.__setattr__(self, "quality_leads", tuple(self.quality_leads))  # lists from YAML
        if self.target_fs <= 0 or self.min_fs <= 0 or self.duration_s <= 0:
            raise ValueError("target_fs, min_fs and duration_s must be positive")
        if not 0 < self.highpass_hz < self.lowpass_hz < self.target_fs / 2:
            raise ValueError(
                f"need 0 < highpass_hz < lowpass_hz < target_fs/2, got {self.highpass_hz}, {self.lowpass_hz}, "
                f"{self.target_fs}"
            )
        if self.filter_order < 1:
            raise ValueError(f"filter_order must be >= 1, got {self.filter_order}")
        if self.flat_std_mv < 0 or not 0 < self.clip_fraction <= 1:
            raise ValueError("need flat_std_mv >= 0 and 0 < clip_fraction <= 1")
        if self.quality_method not in _ZHAO_METHODS:
            raise ValueError(f"quality_method must be one of {_ZHAO_METHODS}, got {self.quality_method!r}")
        unknown = [lead for lead in self.quality_leads if lead not in ST_MEM_LEADS]
        if unknown:
            raise ValueError(f"quality_leads must be among {ST_MEM_LEADS}, got {unknown}")
        if self.quality_min not in QUALITY_LEVELS:
            raise ValueError(f"quality_min must be one of {QUALITY_LEVELS}, got {self.quality_min!r}")

    @property
    def n_samples(self) -> int:
        """Samples per lead after resampling: target_fs * duration_s (2500)."""
        return round(self.target_fs * self.duration_s)


class EcgExclusion(RecordExclusion):
    """Raised for a record that must be excluded (e.g. 'lead aVL absent', 'fs 125 Hz < 250 Hz').

    ``fs_in``: the header's sampling rate when the failed check comes after check 5 (else None).
    """

    reasons = EXCLUSION_REASONS

    def __init__(self, reason: str, detail: str = "", fs_in: float | None = None) -> None:
        super().__init__(reason, detail)
        self.fs_in = fs_in

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class ProcessedEcg:
    """A record that passed every check.

    signal: (12, n_samples) float32 mV, ST_MEM_LEADS order, resampled and filtered.
    fs_in, duration_in_s: the record's sampling rate and full length (header).
    min_lead_std_mv: smallest raw std over the 12 leads (kept segment), in lead ``flattest_lead``;
    max_clip_fraction: largest fraction of a lead's samples at the ADC limits, in lead ``max_clip_lead``.
    quality: worst level over ``quality_leads``; quality_score: its index in QUALITY_LEVELS
    (0 Unacceptable, 1 Barely acceptable, 2 Excellent; NaN when not assessed).
    """

    signal: np.ndarray
    fs_in: float
    duration_in_s: float
    min_lead_std_mv: float
    flattest_lead: str
    max_clip_fraction: float
    max_clip_lead: str
    quality: str
    quality_score: float

    def measurements(self) -> dict[str, float | str]:
        """Everything but the signal: the values ``threshold_exclusion`` looks at, and more."""
        return {name: getattr(self, name) for name in MEASUREMENTS}


@dataclass(frozen=True)
class _RawEcg:
    signal_mv: np.ndarray  # (12, n_keep) float64 mV, ST_MEM_LEADS order, C-contiguous
    fs: float
    duration_s: float  # whole record (header)
    clip_fraction: np.ndarray  # (12,) share of each lead's samples at the ADC limits


def lead_order(sig_names: Sequence[str]) -> list[int]:
    """Index into sig_names for each of ST_MEM_LEADS (12 ints), matched case-insensitively.

    PTB writes 'avl', MIMIC 'aVL'. A name present twice is taken at its first position. Raises
    EcgExclusion('missing_lead') naming every absent lead.
    """
    position: dict[str, int] = {}
    for i, name in enumerate(sig_names):
        position.setdefault(str(name).strip().lower(), i)
    missing = [lead for lead in ST_MEM_LEADS if lead.lower() not in position]
    if missing:
        raise EcgExclusion("missing_lead", f"lead{'s' if len(missing) > 1 else ''} {', '.join(missing)} absent")
    return [position[lead.lower()] for lead in ST_MEM_LEADS]


def _bytes_needed(fmt: str, n_samples: int) -> int:
    """Smallest size in bytes of ``n_samples`` samples stored in ``fmt`` (exact for fixed-width formats)."""
    n_bytes, per_samples = _FMT_PACKING[fmt]
    total = n_samples * n_bytes
    return -(-total // per_samples) if fmt in _FMT_EXACT_SIZE else total // per_samples


def _adc_limits(fmt: str, adc_res: int | None, adc_zero: int | None) -> tuple[int, int, int]:
    """(missing-sample marker, lowest, highest valid ADC value) of one signal."""
    fmt_bits = _FMT_BITS[fmt]
    marker = -(2 ** (fmt_bits - 1))
    bits = adc_res if adc_res and 0 < adc_res <= fmt_bits else fmt_bits
    zero = adc_zero or 0
    low = max(zero - 2 ** (bits - 1), marker + 1)
    high = min(zero + 2 ** (bits - 1) - 1, 2 ** (fmt_bits - 1) - 1)
    return marker, low, high


def _field(values: Sequence | None, i: int) -> Any:
    """``values[i]`` of an optional per-signal header field (wfdb leaves absent fields as None)."""
    return values[i] if values is not None and i < len(values) else None


def _read_digital(header: wfdb.Record, record_path: Path, n_keep: int, channels: list[int]) -> np.ndarray:
    """The first ``n_keep`` samples of ``channels`` as (len(channels), n_keep) int64 ADC units.

    ``wfdb.rdrecord`` parses the header again before reading (with pandas, ~4 ms a record: most of the
    read floor), so the header already parsed for the checks is handed to the function rdrecord itself
    reads single-segment data with. wfdb keeps that function private; if it is absent or fails, the read
    falls back to ``rdrecord``, so a failure still comes from rdrecord itself. A test checks that both
    give identical samples.
    """
    if _RD_SEGMENT is not None:
        try:
            signals = _RD_SEGMENT(
                file_name=header.file_name,
                dir_name=str(record_path.parent),
                pn_dir=None,
                fmt=header.fmt,
                n_sig=header.n_sig,
                sig_len=header.sig_len,
                byte_offset=header.byte_offset,
                samps_per_frame=header.samps_per_frame,
                skew=header.skew,
                init_value=header.init_value,
                sampfrom=0,
                sampto=n_keep,
                channels=channels,
                ignore_skew=False,
                return_res=64,
            )
            return np.stack(signals).astype(np.int64, copy=False)
        except Exception:
            pass
    with _quiet_wfdb():
        record = wfdb.rdrecord(str(record_path), sampto=n_keep, channels=channels, physical=False)
    return np.ascontiguousarray(np.asarray(record.d_signal).T)


def _read(record_path: Path | str, settings: EcgSettings) -> _RawEcg:
    """Checks 1-4 and 6-11 of the module docstring and the read itself (see ``read_record``); the
    thresholds (checks 5 and 12) are ``threshold_exclusion``'s."""
    record_path = Path(record_path)
    if not record_path.with_name(record_path.name + ".hea").is_file():
        raise EcgExclusion("missing_header")
    try:
        with _quiet_wfdb():
            header = wfdb.rdheader(str(record_path))
    except Exception as err:
        raise EcgExclusion("unreadable", f"header: {type(err).__name__}") from err
    if isinstance(header, wfdb.MultiRecord) or getattr(header, "seg_name", None):
        raise EcgExclusion("unreadable", "multi-segment records are not supported")
    if header.sig_len is None:
        raise EcgExclusion("unreadable", "header gives no signal length")

    channels = lead_order(header.sig_name or [])
    fmts = [str(header.fmt[c]) for c in channels]
    calibration = []  # (ADC units per physical unit, mV per physical unit) of each lead
    for c, lead, fmt in zip(channels, ST_MEM_LEADS, fmts, strict=True):
        gain = _field(header.adc_gain, c)
        unit = str(_field(header.units, c) or "mV").strip().lower()
        if fmt not in _FMT_BITS:
            raise EcgExclusion("unreadable", f"lead {lead}: format {fmt} unknown")
        if gain is None or not gain > 0:
            raise EcgExclusion("unreadable", f"lead {lead}: gain {gain}")
        if unit not in _UNIT_TO_MV:
            raise EcgExclusion("unreadable", f"lead {lead}: units {unit!r}")
        if (_field(header.samps_per_frame, c) or 1) != 1:
            raise EcgExclusion("unreadable", f"lead {lead}: several samples per frame")
        calibration.append((float(gain), _UNIT_TO_MV[unit]))

    fs = float(header.fs)
    try:
        return _read_data(header, record_path, channels, fmts, calibration, fs, settings)
    except EcgExclusion as exc:
        exc.fs_in = fs  # check 5 comes first: the selection may rename this low_sampling_rate
        raise


def _read_data(
    header: wfdb.Record,
    record_path: Path,
    channels: list[int],
    fmts: list[str],
    calibration: list[tuple[float, float]],
    fs: float,
    settings: EcgSettings,
) -> _RawEcg:
    """Checks 6-11 and the read itself, once the header is known to be usable."""
    record_dir = record_path.parent
    n_keep = round(settings.duration_s * fs)
    sig_len = header.sig_len
    if n_keep < 1 or sig_len < n_keep:
        raise EcgExclusion("too_short", f"{sig_len / fs:g} s < {settings.duration_s:g} s")

    needed_files = list(dict.fromkeys(header.file_name[c] for c in channels))
    for file_name in needed_files:
        if not (record_dir / file_name).is_file():
            raise EcgExclusion("missing_data", f"{Path(file_name).suffix or 'data'} file absent")
    for file_name in needed_files:
        in_file = [i for i in range(header.n_sig) if header.file_name[i] == file_name]
        fmt = str(header.fmt[in_file[0]])
        if fmt not in _FMT_PACKING:
            continue  # FLAC: compressed, size unknown
        n_stored = sig_len * sum(_field(header.samps_per_frame, i) or 1 for i in in_file)
        offset = _field(header.byte_offset, in_file[0]) or 0
        expected = offset + _bytes_needed(fmt, n_stored)
        size = (record_dir / file_name).stat().st_size
        if size < expected:
            raise EcgExclusion("truncated", f"data file holds {size} of {expected} bytes")

    try:
        digital = _read_digital(header, record_path, n_keep, channels)
    except Exception as err:
        raise EcgExclusion("unreadable", f"data: {type(err).__name__}") from err
    if digital.ndim != 2 or digital.shape[0] != len(ST_MEM_LEADS):
        raise EcgExclusion("unreadable", f"data: shape {digital.T.shape}")
    if digital.shape[1] < n_keep:
        raise EcgExclusion("truncated", f"read {digital.shape[1]} of {n_keep} samples")

    # All 12 leads at once, leads first (the same element-wise arithmetic as lead by lead).
    limits = np.array(
        [_adc_limits(fmts[j], _field(header.adc_res, c), _field(header.adc_zero, c)) for j, c in enumerate(channels)]
    )
    marker, low, high = (column[:, None] for column in limits.T)
    n_missing = np.count_nonzero(digital == marker, axis=1)
    if n_missing.any():
        j = int(np.flatnonzero(n_missing)[0])
        raise EcgExclusion("nan", f"lead {ST_MEM_LEADS[j]}: {int(n_missing[j])} missing samples")
    clip_fraction = np.count_nonzero((digital <= low) | (digital >= high), axis=1) / digital.shape[1]
    baseline = np.array([_field(header.baseline, c) or 0 for c in channels], dtype=np.int64)
    gain, unit_mv = np.array(calibration, dtype=np.float64).T
    signal_mv = (digital - baseline[:, None]) / gain[:, None] * unit_mv[:, None]
    return _RawEcg(signal_mv=signal_mv, fs=fs, duration_s=sig_len / fs, clip_fraction=clip_fraction)


def read_record(record_path: Path | str, settings: EcgSettings) -> tuple[np.ndarray, float, float]:
    """Read the first ``duration_s`` seconds of the 12 leads of a WFDB record (path without extension).

    Returns (signal_mv, fs, max_clip_fraction): signal_mv (round(duration_s * fs), 12) float64 mV in
    ST_MEM_LEADS order; fs in Hz; the largest fraction of a lead's samples at the ADC limits. The header
    is read first and checked; then only the data files of the 12 leads, only up to ``duration_s``.
    Raises EcgExclusion (checks 1-12 of the module docstring).
    """
    raw = _read(record_path, settings)
    worst = int(np.argmax(raw.clip_fraction))
    exclusion = _sampling_rate_exclusion(raw.fs, settings) or _clipping_exclusion(
        float(raw.clip_fraction[worst]), ST_MEM_LEADS[worst], settings
    )
    if exclusion:
        raise exclusion
    return raw.signal_mv.T, raw.fs, float(raw.clip_fraction.max())


@lru_cache(maxsize=16)
def _filters(fs: int, highpass_hz: float, lowpass_hz: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Butterworth high-pass and low-pass second-order sections (each (ceil(order/2), 6))."""
    highpass = scipy.signal.butter(order, highpass_hz, btype="highpass", output="sos", fs=fs)
    lowpass = scipy.signal.butter(order, lowpass_hz, btype="lowpass", output="sos", fs=fs)
    return highpass, lowpass


@dataclass(frozen=True)
class _ZeroPhaseFilter:
    """What ``scipy.signal.sosfiltfilt(sos, x, axis=-1)`` (default odd padding) derives from ``sos`` alone."""

    sos: np.ndarray
    zi: np.ndarray  # sosfilt_zi(sos), shaped (n_sections, 1, 2) for (leads, time) input
    edge: int  # pad length: 3 * ntaps

    @classmethod
    def of(cls, sos: np.ndarray) -> _ZeroPhaseFilter:
        n_sections = sos.shape[0]
        ntaps = 2 * n_sections + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
        return cls(sos, scipy.signal.sosfilt_zi(sos).reshape(n_sections, 1, 2), 3 * ntaps)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Zero-phase filtering of (leads, n) along time, identical to scipy.signal.sosfiltfilt.

        sosfiltfilt solves for the filter's initial state (sosfilt_zi) on every call, ~0.15 ms each,
        as much as filtering 12 leads; here it is solved once per filter. The steps are sosfiltfilt's
        (odd extension, forward pass from zi * first sample, backward pass from zi * last output),
        with scipy's own sosfilt; a test checks identical output.
        """
        edge = self.edge
        if x.shape[-1] <= edge:
            raise ValueError(f"signal of {x.shape[-1]} samples is too short for a pad of {edge}")
        ext = np.concatenate((2 * x[:, :1] - x[:, edge:0:-1], x, 2 * x[:, -1:] - x[:, -2 : -(edge + 2) : -1]), axis=1)
        y, _ = scipy.signal.sosfilt(self.sos, ext, axis=1, zi=self.zi * ext[:, :1])
        y, _ = scipy.signal.sosfilt(self.sos, y[:, ::-1], axis=1, zi=self.zi * y[:, -1:])
        return y[:, ::-1][:, edge:-edge]


@lru_cache(maxsize=16)
def _zero_phase_filters(
    fs: int, highpass_hz: float, lowpass_hz: float, order: int
) -> tuple[_ZeroPhaseFilter, _ZeroPhaseFilter]:
    return tuple(_ZeroPhaseFilter.of(sos) for sos in _filters(fs, highpass_hz, lowpass_hz, order))


def preprocess(signal_mv: np.ndarray, fs: float, settings: EcgSettings) -> np.ndarray:
    """(n, 12) mV at fs, n = round(duration_s * fs) -> (12, n_samples) float32 mV at target_fs.

    FFT resampling (scipy.signal.resample) to n_samples when the rate differs, then zero-phase
    Butterworth high-pass and low-pass (sosfiltfilt along time), in float64.
    """
    x = np.asarray(signal_mv, dtype=np.float64)
    n_in = round(settings.duration_s * fs)
    if x.ndim != 2 or x.shape != (n_in, len(ST_MEM_LEADS)):
        raise ValueError(f"signal_mv must have shape ({n_in}, {len(ST_MEM_LEADS)}) at {fs:g} Hz, got {x.shape}")
    return _preprocess_leads(np.ascontiguousarray(x.T), settings)


def _preprocess_leads(x: np.ndarray, settings: EcgSettings) -> np.ndarray:
    """``preprocess`` of a (12, n) float64 signal (leads first)."""
    if x.shape[1] != settings.n_samples:
        x = scipy.signal.resample(x, settings.n_samples, axis=1)
    highpass, lowpass = _zero_phase_filters(
        settings.target_fs, settings.highpass_hz, settings.lowpass_hz, settings.filter_order
    )
    return lowpass(highpass(x)).astype(np.float32)


@lru_cache(maxsize=1)
def _neurokit2() -> Any:
    """neurokit2, imported on first use (about 1.5 s) so that reading alone stays light."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import neurokit2

    return neurokit2


def _pearson_kurtosis(x: np.ndarray) -> float:
    """``scipy.stats.kurtosis(x, fisher=False)`` of a 1-D float64 array (neurokit2's kSQI).

    The same arithmetic as scipy's (central moments m4 / m2**2, NaN for a constant signal) without its
    array-API and nan-policy wrapping, which costs ~0.25 ms a call; a test checks identical values.
    """
    mean = x.mean(keepdims=True)
    d = x - mean
    d2 = d**2
    m2 = d2.mean()
    m4 = (d2**2).mean()
    with np.errstate(all="ignore"):
        return np.nan if m2 <= (np.finfo(m2.dtype).eps * mean[0]) ** 2 else m4 / m2**2.0


def _zhao2018_level(lead: np.ndarray, fs: int) -> str:
    """neurokit2's ``ecg_quality(lead, sampling_rate=fs, method="zhao2018")`` (simple fusion), computed
    without its per-call overhead.

    Why not call it: it takes ~5 ms a lead, more than reading the record, while its ingredients take
    ~0.7 ms. neurokit2 (as of 0.3.0) computes the same Welch PSD twice (once for pSQI, once for basSQI),
    wraps each in pandas DataFrames, and builds R-peak signals it does not use. Here the R-peaks still
    come from neurokit2 (``ecg_findpeaks``, the detector ``ecg_peaks`` runs), kSQI is scipy's kurtosis
    as in neurokit2 (see ``_pearson_kurtosis``), the PSD is the same ``scipy.signal.welch`` call on the
    same input with the same arguments, band powers are integrated over the same frequency bins in the
    same way, and the fusion rule is neurokit2's "simple" rule. So the level is neurokit2's, not an
    approximation of it; a test compares it with ``neurokit2.ecg_quality`` on real and demo records.
    """
    neurokit2 = _neurokit2()
    x = np.asarray(lead, dtype=np.float64)
    rpeaks = neurokit2.ecg_findpeaks(x, sampling_rate=fs)["ECG_R_Peaks"]
    k_sqi = _pearson_kurtosis(x)

    # neurokit2.signal_psd(method="welch", window=1024 s): mean removed, bins >= min_frequency kept;
    # the window is capped at half the signal and nfft is twice the window.
    n = len(x)
    min_frequency = (2 * fs) / (n / 2)
    nperseg = int(min(1024 * fs, n / 2))
    frequency, power = scipy.signal.welch(
        x - np.mean(x),
        fs=fs,
        scaling="density",
        detrend=False,
        nfft=int(nperseg * 2),
        average="mean",
        nperseg=nperseg,
        window="hann",
    )

    def band_power(low: float, high: float) -> float:
        # neurokit2.signal_power: trapezoid over the kept bins with low <= f < high; 0 power is NaN
        where = (frequency >= max(low, min_frequency)) & (frequency < high)
        total = _trapezoid(y=power[where], x=frequency[where])
        return np.nan if total == 0.0 else total

    with np.errstate(divide="ignore", invalid="ignore"):
        p_sqi = np.float64(band_power(5, 15)) / np.float64(band_power(5, 40))  # QRS power share
        bas_sqi = 1 - np.float64(band_power(0, 1)) / np.float64(band_power(0, 40))  # 1 - baseline share

    # neurokit2's simple heuristic fusion: 2 optimal, 1 suspicious, 0 unqualified per index
    ecg_rate = 60000.0 / (1000.0 / fs * np.min(np.diff(rpeaks))) if len(rpeaks) > 1 else 1
    l1, l2, l3 = (0.5, 0.8, 0.4) if ecg_rate < 130 else (0.4, 0.7, 0.3)
    p_class = 2 if l1 < p_sqi < l2 else 1 if l3 < p_sqi < l1 else 0
    k_class = 2 if k_sqi > 5 else 0
    bas_class = 2 if bas_sqi >= 0.95 else 0 if bas_sqi < 0.9 else 1
    classes = (p_class, k_class, bas_class)
    n_optimal, n_suspicious, n_unqualified = classes.count(2), classes.count(1), classes.count(0)
    if n_unqualified >= 2 or (n_unqualified == 1 and n_suspicious == 2):
        return "Unacceptable"
    if n_optimal >= 2 and n_unqualified == 0:
        return "Excellent"
    return "Barely acceptable"


def _lead_quality(lead: np.ndarray, settings: EcgSettings) -> str:
    """neurokit2's zhao2018 level for one processed lead; a lead it fails on is 'Unacceptable'."""
    _neurokit2()  # an import error must not pass for bad quality
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # neurokit2 warns about the signal itself (few peaks, ...)
            return _zhao2018_level(lead, settings.target_fs)
    except Exception:
        return QUALITY_LEVELS[0]


def signal_quality(signal: np.ndarray, settings: EcgSettings) -> tuple[str, float]:
    """Worst neurokit2 quality level over ``quality_leads`` of a processed (12, n_samples) signal.

    Returns (level, score) with score the level's index in QUALITY_LEVELS; (NOT_ASSESSED, nan) when
    ``quality_leads`` is empty.
    """
    if not settings.quality_leads:
        return NOT_ASSESSED, math.nan
    levels = [_lead_quality(signal[ST_MEM_LEADS.index(lead)], settings) for lead in settings.quality_leads]
    score = min(QUALITY_LEVELS.index(level) for level in levels)
    return QUALITY_LEVELS[score], float(score)


def measure_record(record_path: Path | str, settings: EcgSettings) -> ProcessedEcg:
    """Read, preprocess and measure one record (path without extension), whatever the thresholds.

    Returns a ProcessedEcg (signal (12, n_samples) float32 and its measurements). Raises EcgExclusion
    for checks 1-4 and 6-11 of the module docstring, never for a threshold; any unexpected error while
    reading or processing becomes EcgExclusion('unreadable').
    """
    try:
        raw = _read(record_path, settings)
    except EcgExclusion:
        raise
    except Exception as err:
        raise EcgExclusion("unreadable", type(err).__name__) from err
    try:
        lead_std = raw.signal_mv.std(axis=1)
        signal = _preprocess_leads(raw.signal_mv, settings)
        quality, score = signal_quality(signal, settings)
    except Exception as err:  # e.g. a rate so low that the kept segment cannot be filtered
        raise EcgExclusion("unreadable", f"processing: {type(err).__name__}", fs_in=raw.fs) from err
    flattest = int(np.argmin(lead_std))
    worst_clipped = int(np.argmax(raw.clip_fraction))
    return ProcessedEcg(
        signal=signal,
        fs_in=raw.fs,
        duration_in_s=raw.duration_s,
        min_lead_std_mv=float(lead_std[flattest]),
        flattest_lead=ST_MEM_LEADS[flattest],
        max_clip_fraction=float(raw.clip_fraction[worst_clipped]),
        max_clip_lead=ST_MEM_LEADS[worst_clipped],
        quality=quality,
        quality_score=score,
    )


def _sampling_rate_exclusion(fs_in: float | None, settings: EcgSettings) -> EcgExclusion | None:
    if fs_in is not None and fs_in < settings.min_fs:
        return EcgExclusion("low_sampling_rate", f"fs {fs_in:g} Hz < {settings.min_fs} Hz")
    return None


def _clipping_exclusion(fraction: float, lead: str, settings: EcgSettings) -> EcgExclusion | None:
    if fraction >= settings.clip_fraction:
        return EcgExclusion("clipping", f"lead {lead}: {fraction:.1%} of samples at the ADC limits")
    return None


def threshold_exclusion(measured: Mapping[str, Any], settings: EcgSettings) -> EcgExclusion | None:
    """The first threshold a measured record fails (checks 5, 12, 13, 14 in that order), else None.

    ``measured``: ``ProcessedEcg.measurements()`` or a row of the stage's measurements table.
    """
    if exclusion := _sampling_rate_exclusion(measured["fs_in"], settings):
        return exclusion
    if exclusion := _clipping_exclusion(measured["max_clip_fraction"], measured["max_clip_lead"], settings):
        return exclusion
    if measured["min_lead_std_mv"] < settings.flat_std_mv:
        detail = (
            f"lead {measured['flattest_lead']}: std {measured['min_lead_std_mv']:.3g} mV < {settings.flat_std_mv:g} mV"
        )
        return EcgExclusion("flat_lead", detail)
    if measured["quality"] != NOT_ASSESSED and measured["quality_score"] < QUALITY_LEVELS.index(settings.quality_min):
        return EcgExclusion("low_quality", f"{measured['quality']} < {settings.quality_min}")
    return None


def structural_exclusion(exclusion: EcgExclusion, settings: EcgSettings) -> EcgExclusion:
    """The reason a record that failed a check after 5 gets: ``low_sampling_rate`` when its rate is below
    ``min_fs`` (check 5 comes first), else its own."""
    return _sampling_rate_exclusion(exclusion.fs_in, settings) or exclusion


def process_record(record_path: Path | str, settings: EcgSettings) -> ProcessedEcg:
    """Read, check, preprocess and grade one record (path without extension).

    Returns a ProcessedEcg (signal (12, n_samples) float32). Raises EcgExclusion in the order of the
    module docstring: ``measure_record`` followed by ``threshold_exclusion``.
    """
    try:
        ecg = measure_record(record_path, settings)
    except EcgExclusion as exc:
        raise structural_exclusion(exc, settings) from exc
    if exclusion := threshold_exclusion(ecg.measurements(), settings):
        raise exclusion
    return ecg
