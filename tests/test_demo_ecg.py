"""Demo ECG generator: MIMIC-IV-ECG WFDB layout, Einthoven, planted QRS/T signal, determinism."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import wfdb
from reference_data import mimic_ecg_header

from hftri_mimic.demo.ecg import (
    MIMIC_LEADS,
    ecg_intervals,
    synth_ecg,
    write_mimic_ecg_record,
)

FS = 500
ECG_TIME = datetime(2180, 7, 23, 8, 44, 0)
II, V5 = MIMIC_LEADS.index("II"), MIMIC_LEADS.index("V5")

# One regex per line shape of a MIMIC-IV-ECG header (record line, signal line, comment line).
RECORD_LINE = re.compile(r"^(\d+) 12 500 5000 (\d{2}:\d{2}:\d{2}) (\d{2}/\d{2}/\d{4})$")
SIGNAL_LINE = re.compile(r"^(\d+)\.dat 16 200\.0\(0\)/mV 16 0 (-?\d+) (\d+) 0 (\S+)$")
COMMENT_LINE = re.compile(r"^# <subject_id>: (\d+)$")


def clean(qrs_ms: float = 90.0, t_amp: float = 1.0, hr_bpm: float = 70.0, seed: int = 0) -> np.ndarray:
    return synth_ecg(
        np.random.default_rng(seed),
        qrs_ms=qrs_ms,
        t_amp=t_amp,
        hr_bpm=hr_bpm,
        noise_mv=0.0,
        wander_mv=0.0,
    )


def write(
    tmp_path: Path,
    signal: np.ndarray,
    study_id: int = 40689238,
    subject_id: int = 10000032,
) -> Path:
    record_dir = tmp_path / "files/p1000/p10000032/s40689238"
    write_mimic_ecg_record(
        record_dir,
        study_id=study_id,
        subject_id=subject_id,
        signal_mv=signal,
        ecg_time=ECG_TIME,
    )
    return record_dir / str(study_id)


def ms_to_idx(ms: float) -> int:
    return round(ms * FS / 1000)


def qrs_width_ms(lead: np.ndarray) -> float:
    """Median QRS width: span around each R peak where |slope| > 10 % of the beat's max slope."""
    slope = np.abs(np.diff(lead)) * FS
    half = ms_to_idx(120)
    r_peaks = [
        i
        for i in range(half, lead.size - half)
        if lead[i] > 0.5 * lead.max() and lead[i] == lead[i - half : i + half].max()
    ]
    widths = []
    for r in r_peaks:
        s = slope[r - half : r + half]
        above = np.flatnonzero(s > 0.1 * s.max())
        widths.append((above[-1] - above[0] + 1) * 1000 / FS)
    assert len(widths) >= 5, f"found only {len(widths)} R peaks in lead II"
    return float(np.median(widths))


def t_peak(lead: np.ndarray, qrs_ms: float, hr_bpm: float = 70.0) -> float:
    """Signed extreme of the first beat's T wave (between QRS end and T end of ecg_intervals)."""
    iv = ecg_intervals(qrs_ms, hr_bpm, FS)
    seg = lead[ms_to_idx(iv["qrs_end"]) : ms_to_idx(iv["t_end"]) + 1]
    return float(seg[np.argmax(np.abs(seg))])


def test_record_reads_back_with_mimic_fields(tmp_path):
    path = write(tmp_path, synth_ecg(np.random.default_rng(1), qrs_ms=90, t_amp=1.0, hr_bpm=70))
    for rec in (wfdb.rdheader(str(path)), wfdb.rdrecord(str(path))):
        assert rec.sig_name == list(MIMIC_LEADS), "leads not in MIMIC storage order (aVF before aVL)"
        assert rec.fs == 500 and rec.sig_len == 5000 and rec.n_sig == 12
        assert rec.fmt == ["16"] * 12
        assert rec.adc_gain == [200.0] * 12
        assert rec.baseline == [0] * 12
        assert rec.adc_res == [16] * 12 and rec.adc_zero == [0] * 12
        assert rec.units == ["mV"] * 12
        assert rec.comments == ["<subject_id>: 10000032"]
        assert rec.base_date == ECG_TIME.date() and rec.base_time == ECG_TIME.time()


def test_header_text_has_the_real_mimic_layout(tmp_path):
    ours = write(tmp_path, clean()).with_suffix(".hea").read_text().splitlines()
    real = mimic_ecg_header().read_text().splitlines()
    assert len(ours) == len(real) == 14, f"{len(ours)} header lines, the real one has {len(real)}"
    shapes = [RECORD_LINE] + [SIGNAL_LINE] * 12 + [COMMENT_LINE]
    for n, (mine, theirs, shape) in enumerate(zip(ours, real, shapes, strict=True)):
        assert shape.match(theirs), f"regex for line {n} does not describe the real header: {theirs!r}"
        assert shape.match(mine), f"line {n} {mine!r} is not shaped like the real {theirs!r}"
        assert len(mine.split()) == len(theirs.split()), f"line {n}: field count differs from {theirs!r}"
    lead_names = [SIGNAL_LINE.match(line).group(4) for line in ours[1:13]]
    assert lead_names == [SIGNAL_LINE.match(line).group(4) for line in real[1:13]] == list(MIMIC_LEADS)
    assert RECORD_LINE.match(ours[0]).groups() == ("40689238", "08:44:00", "23/07/2180")


def test_header_initial_values_and_checksums_match_the_samples(tmp_path):
    path = write(tmp_path, synth_ecg(np.random.default_rng(2), qrs_ms=120, t_amp=0.5, hr_bpm=80))
    d = wfdb.rdrecord(str(path), physical=False).d_signal.astype(np.int64)
    header = wfdb.rdheader(str(path))
    assert header.init_value == d[0].tolist()
    assert header.checksum == (d.sum(axis=0) % 65536).tolist(), "checksums are not the 16-bit sample sums"


def test_round_trip_within_one_adc_step(tmp_path):
    x = synth_ecg(np.random.default_rng(3), qrs_ms=140, t_amp=-0.3, hr_bpm=95)
    back = wfdb.rdrecord(str(write(tmp_path, x))).p_signal
    assert back.shape == x.shape
    assert np.abs(back - x).max() <= 1 / 200, "stored signal differs from the input by more than 1/200 mV"


def test_write_creates_missing_dir_and_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError):
        write_mimic_ecg_record(
            tmp_path / "a",
            study_id=1,
            subject_id=2,
            signal_mv=np.zeros((5000, 11)),
            ecg_time=ECG_TIME,
        )
    write_mimic_ecg_record(
        tmp_path / "b/c",
        study_id=1,
        subject_id=2,
        signal_mv=np.zeros((5000, 12)),
        ecg_time=ECG_TIME,
    )
    assert (tmp_path / "b/c/1.hea").exists() and (tmp_path / "b/c/1.dat").stat().st_size == 5000 * 12 * 2


def test_output_shape_dtype_and_range():
    x = synth_ecg(np.random.default_rng(4), qrs_ms=160, t_amp=-1.0, hr_bpm=120)
    assert x.shape == (5000, 12) and x.dtype == np.float64
    assert np.isfinite(x).all() and np.abs(x).max() < 5.0, "ECG amplitudes should be a few mV"


def test_limb_leads_obey_einthoven_without_noise():
    x = clean(qrs_ms=130, t_amp=0.2, hr_bpm=85)
    lead = {name: x[:, j] for j, name in enumerate(MIMIC_LEADS)}
    np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"], atol=1e-9)
    np.testing.assert_allclose(lead["aVR"] + lead["aVL"] + lead["aVF"], 0.0, atol=1e-9)
    np.testing.assert_allclose(lead["aVL"], lead["I"] - lead["II"] / 2, atol=1e-9)
    np.testing.assert_allclose(lead["aVF"], lead["II"] - lead["I"] / 2, atol=1e-9)


def test_wider_qrs_is_measured_wider_on_lead_II():
    normal, wide = (
        qrs_width_ms(clean(qrs_ms=90)[:, II]),
        qrs_width_ms(clean(qrs_ms=150)[:, II]),
    )
    assert wide > normal + 30, f"QRS measured {normal} ms at qrs_ms=90 and {wide} ms at qrs_ms=150"


def test_negative_t_amp_inverts_the_t_wave_in_V5():
    upright, inverted = (
        t_peak(clean(t_amp=1.0)[:, V5], 90),
        t_peak(clean(t_amp=-0.5)[:, V5], 90),
    )
    assert upright > 0.2 and inverted < -0.1, f"T in V5: {upright:.2f} mV (t_amp=1), {inverted:.2f} mV (t_amp=-0.5)"


def test_plausible_amplitudes_and_precordial_r_progression():
    x = clean()
    iv = ecg_intervals(90, 70, FS)
    qrs = x[ms_to_idx(iv["qrs_onset"]) : ms_to_idx(iv["qrs_end"]) + 1]
    assert 0.7 < qrs[:, II].max() < 1.4, f"R in II is {qrs[:, II].max():.2f} mV, expected about 1"
    assert 0.15 < t_peak(x[:, II], 90) < 0.5, "T in II should be upright, about 0.3 mV"
    r = [qrs[:, MIMIC_LEADS.index(f"V{k}")].max() for k in range(1, 6)]
    assert all(np.diff(r) > 0), f"R does not grow from V1 to V5: {np.round(r, 2)}"
    assert qrs[:, MIMIC_LEADS.index("aVR")].min() < -0.5, "aVR should be mostly negative"


def test_intervals_bracket_the_first_beat():
    for qrs_ms, hr in [(90, 70), (150, 100)]:
        iv = ecg_intervals(qrs_ms, hr, FS)
        lead = clean(qrs_ms=qrs_ms, hr_bpm=hr)[:, II]
        first_r = int(np.argmax(lead[: ms_to_idx(iv["qrs_onset"] + iv["rr_interval"] / 2)]))
        assert iv["qrs_onset"] < first_r * 1000 / FS < iv["qrs_end"], "R peak outside qrs_onset..qrs_end"
        assert 0 < iv["p_onset"] < iv["p_end"] < iv["qrs_onset"] < iv["qrs_end"] < iv["t_end"]
        assert iv["qrs_end"] - iv["qrs_onset"] == qrs_ms and iv["rr_interval"] == round(60000 / hr)
        assert -30 <= iv["qrs_axis"] <= 90 and 0 <= iv["p_axis"] <= 75
    assert ecg_intervals(90, 70, FS, t_amp=-0.5)["t_axis"] > 90, "inverted lateral T should swing the T axis right"


def test_same_seed_same_ecg_different_seed_different():
    def make(seed: int) -> np.ndarray:
        return synth_ecg(np.random.default_rng(seed), qrs_ms=110, t_amp=0.8, hr_bpm=75)

    np.testing.assert_array_equal(make(7), make(7))
    assert not np.allclose(make(7), make(8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_record_passes_zhao2018_quality(seed):
    import neurokit2 as nk

    lead_ii = synth_ecg(np.random.default_rng(seed), qrs_ms=90, t_amp=1.0, hr_bpm=70)[:, II]
    quality = nk.ecg_quality(lead_ii, sampling_rate=FS, method="zhao2018")
    assert quality in ("Excellent", "Barely acceptable"), f"neurokit2 zhao2018 rates the demo ECG {quality!r}"
