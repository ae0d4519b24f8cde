"""12-lead ECGs from WFDB records as ST-MEM expects them (SPEC §4.4).

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
Preprocessing: FFT resampling (``scipy.signal.resample``) to ``target_fs`` when the rate differs, then
Butterworth high-pass ``highpass_hz`` and low-pass ``lowpass_hz`` (order ``filter_order`` each), both
zero-phase (``sosfiltfilt``). Cropping and standardisation belong to the model's input transform.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal

from hftri_mimic.exclusions import RecordExclusion


@contextmanager
def _quiet_wfdb() -> Iterator[None]:
    """Silence the pandas deprecation warnings that wfdb triggers on import and read (only wfdb's)."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=r"wfdb(\.|$)")
        yield


with _quiet_wfdb():
    import wfdb

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
}

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
    """Everything that decides whether and how a record is processed (config ``ecg:``)."""

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
    """Raised for a record that must be excluded (e.g. 'lead aVL absent', 'fs 125 Hz < 250 Hz')."""

    reasons = EXCLUSION_REASONS

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class ProcessedEcg:
    """A record that passed every check.

    signal: (12, n_samples) float32 mV, ST_MEM_LEADS order, resampled and filtered.
    fs_in, duration_in_s: the record's sampling rate and full length (header).
    min_lead_std_mv: smallest raw std over the 12 leads (kept segment); max_clip_fraction: largest
    fraction of a lead's samples at the ADC limits. quality: worst level over ``quality_leads``;
    quality_score: its index in QUALITY_LEVELS (0 Unacceptable, 1 Barely acceptable, 2 Excellent).
    """

    signal: np.ndarray
    fs_in: float
    duration_in_s: float
    min_lead_std_mv: float
    max_clip_fraction: float
    quality: str
    quality_score: float


@dataclass(frozen=True)
class _RawEcg:
    signal_mv: np.ndarray  # (n_keep, 12) float64 mV, ST_MEM_LEADS order
    fs: float
    duration_s: float  # whole record (header)
    max_clip_fraction: float


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


def _read(record_path: Path | str, settings: EcgSettings) -> _RawEcg:
    """Checks 1-12 of the module docstring and the read itself (see ``read_record``)."""
    record_path = Path(record_path)
    record_dir = record_path.parent
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
    if fs < settings.min_fs:
        raise EcgExclusion("low_sampling_rate", f"fs {fs:g} Hz < {settings.min_fs} Hz")
    n_keep = round(settings.duration_s * fs)
    sig_len = header.sig_len
    if sig_len < n_keep:
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
        with _quiet_wfdb():
            record = wfdb.rdrecord(str(record_path), sampto=n_keep, channels=channels, physical=False)
        digital = np.asarray(record.d_signal)
    except Exception as err:
        raise EcgExclusion("unreadable", f"data: {type(err).__name__}") from err
    if digital.ndim != 2 or digital.shape[1] != len(ST_MEM_LEADS):
        raise EcgExclusion("unreadable", f"data: shape {digital.shape}")
    if digital.shape[0] < n_keep:
        raise EcgExclusion("truncated", f"read {digital.shape[0]} of {n_keep} samples")

    signal_mv = np.empty(digital.shape, dtype=np.float64)
    clip_fraction = np.zeros(len(ST_MEM_LEADS))
    for j, c in enumerate(channels):
        marker, low, high = _adc_limits(fmts[j], _field(header.adc_res, c), _field(header.adc_zero, c))
        d = digital[:, j]
        missing = d == marker
        if missing.any():
            raise EcgExclusion("nan", f"lead {ST_MEM_LEADS[j]}: {int(missing.sum())} missing samples")
        clip_fraction[j] = np.mean((d <= low) | (d >= high))
        gain, unit_mv = calibration[j]
        signal_mv[:, j] = (d - (_field(header.baseline, c) or 0)) / gain * unit_mv
    worst = int(np.argmax(clip_fraction))
    if clip_fraction[worst] >= settings.clip_fraction:
        detail = f"lead {ST_MEM_LEADS[worst]}: {clip_fraction[worst]:.1%} of samples at the ADC limits"
        raise EcgExclusion("clipping", detail)
    return _RawEcg(
        signal_mv=signal_mv,
        fs=fs,
        duration_s=sig_len / fs,
        max_clip_fraction=float(clip_fraction[worst]),
    )


def read_record(record_path: Path | str, settings: EcgSettings) -> tuple[np.ndarray, float, float]:
    """Read the first ``duration_s`` seconds of the 12 leads of a WFDB record (path without extension).

    Returns (signal_mv, fs, max_clip_fraction): signal_mv (round(duration_s * fs), 12) float64 mV in
    ST_MEM_LEADS order; fs in Hz; the largest fraction of a lead's samples at the ADC limits. The header
    is read first and checked; then only the data files of the 12 leads, only up to ``duration_s``.
    Raises EcgExclusion (checks 1-12 of the module docstring).
    """
    raw = _read(record_path, settings)
    return raw.signal_mv, raw.fs, raw.max_clip_fraction


@lru_cache(maxsize=16)
def _filters(fs: int, highpass_hz: float, lowpass_hz: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Butterworth high-pass and low-pass second-order sections (each (ceil(order/2), 6))."""
    highpass = scipy.signal.butter(order, highpass_hz, btype="highpass", output="sos", fs=fs)
    lowpass = scipy.signal.butter(order, lowpass_hz, btype="lowpass", output="sos", fs=fs)
    return highpass, lowpass


def preprocess(signal_mv: np.ndarray, fs: float, settings: EcgSettings) -> np.ndarray:
    """(n, 12) mV at fs, n = round(duration_s * fs) -> (12, n_samples) float32 mV at target_fs.

    FFT resampling (scipy.signal.resample) to n_samples when the rate differs, then zero-phase
    Butterworth high-pass and low-pass (sosfiltfilt along time), in float64.
    """
    x = np.asarray(signal_mv, dtype=np.float64)
    n_in = round(settings.duration_s * fs)
    if x.ndim != 2 or x.shape != (n_in, len(ST_MEM_LEADS)):
        raise ValueError(f"signal_mv must have shape ({n_in}, {len(ST_MEM_LEADS)}) at {fs:g} Hz, got {x.shape}")
    x = np.ascontiguousarray(x.T)  # (12, n)
    if x.shape[1] != settings.n_samples:
        x = scipy.signal.resample(x, settings.n_samples, axis=1)
    highpass, lowpass = _filters(settings.target_fs, settings.highpass_hz, settings.lowpass_hz, settings.filter_order)
    x = scipy.signal.sosfiltfilt(highpass, x, axis=1)
    x = scipy.signal.sosfiltfilt(lowpass, x, axis=1)
    return x.astype(np.float32)


@lru_cache(maxsize=1)
def _neurokit2() -> Any:
    """neurokit2, imported on first use (about 1.5 s) so that reading alone stays light."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import neurokit2

    return neurokit2


def _lead_quality(lead: np.ndarray, settings: EcgSettings) -> str:
    """neurokit2's level for one processed lead; a lead neurokit2 fails on is 'Unacceptable'."""
    neurokit2 = _neurokit2()  # an import error must not pass for bad quality
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # neurokit2 warns about the signal itself (few peaks, ...)
            level = neurokit2.ecg_quality(
                np.asarray(lead, dtype=np.float64), sampling_rate=settings.target_fs, method=settings.quality_method
            )
    except Exception:
        return QUALITY_LEVELS[0]
    if level not in QUALITY_LEVELS:
        raise ValueError(f"neurokit2 ecg_quality({settings.quality_method!r}) returned {level!r}, not a level")
    return str(level)


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


def process_record(record_path: Path | str, settings: EcgSettings) -> ProcessedEcg:
    """Read, check, preprocess and grade one record (path without extension).

    Returns a ProcessedEcg (signal (12, n_samples) float32). Raises EcgExclusion in the order of the
    module docstring; any unexpected error while reading becomes EcgExclusion('unreadable').
    """
    try:
        raw = _read(record_path, settings)
    except EcgExclusion:
        raise
    except Exception as err:
        raise EcgExclusion("unreadable", type(err).__name__) from err
    lead_std = raw.signal_mv.std(axis=0)
    flattest = int(np.argmin(lead_std))
    if lead_std[flattest] < settings.flat_std_mv:
        raise EcgExclusion(
            "flat_lead", f"lead {ST_MEM_LEADS[flattest]}: std {lead_std[flattest]:.3g} mV < {settings.flat_std_mv:g} mV"
        )
    signal = preprocess(raw.signal_mv, raw.fs, settings)
    quality, score = signal_quality(signal, settings)
    if quality != NOT_ASSESSED and score < QUALITY_LEVELS.index(settings.quality_min):
        raise EcgExclusion("low_quality", f"{quality} < {settings.quality_min}")
    return ProcessedEcg(
        signal=signal,
        fs_in=raw.fs,
        duration_in_s=raw.duration_s,
        min_lead_std_mv=float(lead_std[flattest]),
        max_clip_fraction=raw.max_clip_fraction,
        quality=quality,
        quality_score=score,
    )
