"""ECG library (docs/SIGNALS.md, ECG): ST-MEM lead order, resampling and filtering checked against an independent
scipy reference on a real PTB record, and one test per exclusion reason on real WFDB files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
from reference_data import ptb_record

from hftri_mimic.demo.ecg import MIMIC_LEADS, synth_ecg, write_mimic_ecg_record
from hftri_mimic.ecg.signal import (
    EXCLUSION_REASONS,
    ST_MEM_LEADS,
    THRESHOLDS,
    EcgExclusion,
    EcgSettings,
    lead_order,
    measure_record,
    process_record,
    read_record,
    signal_quality,
    structural_exclusion,
    threshold_exclusion,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import wfdb

DEFAULT = EcgSettings()
ECG_TIME = datetime(2180, 7, 23, 8, 44, 0)
STUDY = 40689238
N_LEADS = len(MIMIC_LEADS)


def synth(
    seed: int = 0,
    *,
    qrs_ms: float = 90.0,
    t_amp: float = 1.0,
    hr_bpm: float = 70.0,
    fs: int = 500,
    seconds: float = 10.0,
) -> np.ndarray:
    """A demo ECG (n, 12) mV in MIMIC storage order, with the demo's default noise and wander."""
    rng = np.random.default_rng(seed)
    return synth_ecg(rng, qrs_ms=qrs_ms, t_amp=t_amp, hr_bpm=hr_bpm, fs=fs, n_samples=round(fs * seconds))


def write(folder: Path, signal_mv: np.ndarray, fs: int = 500, study_id: int = STUDY) -> Path:
    """Write a MIMIC-IV-ECG record with the demo writer; returns the record path without extension."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="wfdb")  # pandas, inside wfdb
        write_mimic_ecg_record(
            folder, study_id=study_id, subject_id=10000032, signal_mv=signal_mv, ecg_time=ECG_TIME, fs=fs
        )
    return folder / str(study_id)


def clean_record(tmp_path: Path) -> Path:
    return write(tmp_path, synth(0))


def edit_adc(record: Path, edit) -> None:
    """Apply ``edit`` to the (n, 12) int16 ADC samples of a format-16 record, in place on disk."""
    dat = record.with_suffix(".dat")
    samples = np.fromfile(dat, dtype="<i2").reshape(-1, N_LEADS)
    edit(samples)
    samples.astype("<i2").tofile(dat)


def excluded(record: Path, settings: EcgSettings = DEFAULT) -> EcgExclusion:
    with pytest.raises(EcgExclusion) as info:
        process_record(record, settings)
    assert info.value.reason in EXCLUSION_REASONS
    return info.value


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


# --- real PTB record: an independent reference --------------------------------------------------


def reference_ptb() -> np.ndarray:
    """First 10 s of the 12 standard leads, resampled 1000 -> 250 Hz, band-passed: (12, 2500)."""
    record = wfdb.rdrecord(str(ptb_record()))
    names = [name.lower() for name in record.sig_name]
    columns = [names.index(lead.lower()) for lead in ST_MEM_LEADS]
    x = record.p_signal[:10_000, columns].T  # (12, 10000) mV
    x = scipy.signal.resample(x, 2500, axis=1)
    highpass = scipy.signal.butter(5, 0.67, btype="highpass", output="sos", fs=250)
    lowpass = scipy.signal.butter(5, 40.0, btype="lowpass", output="sos", fs=250)
    return scipy.signal.sosfiltfilt(lowpass, scipy.signal.sosfiltfilt(highpass, x, axis=1), axis=1)


def test_ptb_record_matches_an_independent_scipy_reference():
    ecg = process_record(ptb_record(), DEFAULT)
    assert ecg.signal.shape == (12, 2500) and ecg.signal.dtype == np.float32
    assert (ecg.fs_in, ecg.duration_in_s) == (1000.0, 38.4)
    diff = np.abs(ecg.signal - reference_ptb()).max(axis=1)
    assert diff.max() < 1e-4, (
        f"max |library - reference| per lead (mV): {dict(zip(ST_MEM_LEADS, diff.round(6), strict=True))}"
    )


def test_ptb_frank_leads_are_neither_needed_nor_read(tmp_path):
    for suffix in (".hea", ".dat"):  # the .xyz file with vx, vy, vz is left behind
        shutil.copy(ptb_record().with_suffix(suffix), tmp_path / f"s0010_re{suffix}")
    alone = process_record(tmp_path / "s0010_re", DEFAULT)
    np.testing.assert_array_equal(alone.signal, process_record(ptb_record(), DEFAULT).signal)


def test_lead_order_matches_names_case_insensitively():
    ptb = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6", "vx", "vy", "vz"]
    assert lead_order(ptb) == list(range(12))
    assert lead_order(list(MIMIC_LEADS)) == [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11], "aVL/aVF not swapped"
    with pytest.raises(EcgExclusion) as info:
        lead_order([name for name in MIMIC_LEADS if name != "aVL"])
    assert info.value.reason == "missing_lead" and "aVL" in info.value.detail


# --- MIMIC storage order ---------------------------------------------------------------------------


def test_mimic_aVF_and_aVL_swap_into_st_mem_order(tmp_path):
    t = np.arange(5000) / 500
    avf_in, avl_in = np.sin(2 * np.pi * 1.0 * t), 0.5 * np.sin(2 * np.pi * 3.0 * t)
    signal = synth(1)
    signal[:, MIMIC_LEADS.index("aVF")] = avf_in  # stored 5th
    signal[:, MIMIC_LEADS.index("aVL")] = avl_in  # stored 6th
    record = write(tmp_path, signal)

    assert wfdb.rdheader(str(record)).sig_name[4:6] == ["aVF", "aVL"], "the record must use MIMIC's order"
    assert lead_order(wfdb.rdheader(str(record)).sig_name)[4:6] == [5, 4]
    x, fs, clip = read_record(record, DEFAULT)
    assert x.shape == (5000, 12) and x.dtype == np.float64 and fs == 500.0 and clip == 0.0
    assert corr(x[:, ST_MEM_LEADS.index("aVL")], avl_in) > 0.999, "aVL taken from the aVF slot"
    assert corr(x[:, ST_MEM_LEADS.index("aVF")], avf_in) > 0.999, "aVF taken from the aVL slot"
    np.testing.assert_allclose(x[:, 4], avl_in, atol=0.5 / 200 + 1e-9, err_msg="aVL not in mV (gain 200)")

    out = process_record(record, DEFAULT).signal  # the 1 Hz sine is damped a little by the 0.67 Hz high-pass
    avl_250, avf_250 = scipy.signal.resample(avl_in, 2500), scipy.signal.resample(avf_in, 2500)
    assert corr(out[4], avl_250) > 0.95 and abs(corr(out[4], avf_250)) < 0.1, "processed aVL is not the aVL input"
    assert corr(out[5], avf_250) > 0.95 and abs(corr(out[5], avl_250)) < 0.1, "processed aVF is not the aVF input"


# --- one test per exclusion reason -----------------------------------------------------------------


def test_clean_synthetic_record_passes(tmp_path):
    ecg = process_record(clean_record(tmp_path), DEFAULT)
    assert ecg.signal.shape == (12, 2500) and ecg.signal.dtype == np.float32
    assert ecg.quality in ("Excellent", "Barely acceptable") and ecg.quality_score in (1.0, 2.0)
    assert (ecg.fs_in, ecg.duration_in_s, ecg.max_clip_fraction) == (500.0, 10.0, 0.0)
    assert ecg.min_lead_std_mv > DEFAULT.flat_std_mv


def test_missing_header(tmp_path):
    record = clean_record(tmp_path)
    record.with_suffix(".hea").unlink()
    assert excluded(record).reason == "missing_header"


def test_missing_data_file(tmp_path):
    record = clean_record(tmp_path)
    record.with_suffix(".dat").unlink()
    assert excluded(record).reason == "missing_data"


def test_garbage_header_is_unreadable(tmp_path):
    record = clean_record(tmp_path)
    record.with_suffix(".hea").write_text("this is not a WFDB header\n\x00\x01 12 lines of noise\n")
    assert excluded(record).reason == "unreadable"


def test_data_file_cut_in_half_is_truncated(tmp_path):
    record = clean_record(tmp_path)
    dat = record.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])
    assert excluded(record).reason == "truncated"


def test_renamed_V3_is_a_missing_lead(tmp_path):
    record = clean_record(tmp_path)
    hea = record.with_suffix(".hea")
    hea.write_text(hea.read_text().replace(" V3\n", " V3R\n"))
    error = excluded(record)
    assert error.reason == "missing_lead" and "V3" in error.detail, str(error)


def test_8_second_record_is_too_short(tmp_path):
    assert excluded(write(tmp_path, synth(0, seconds=8.0))).reason == "too_short"


def test_200_hz_record_has_a_low_sampling_rate(tmp_path):
    error = excluded(write(tmp_path, synth(0, fs=200), fs=200))
    assert error.reason == "low_sampling_rate" and "200" in error.detail


def test_a_low_rate_names_the_exclusion_before_a_later_check(tmp_path):
    """Check 5 (rate) comes before check 6 (length): a short 100 Hz record is low_sampling_rate, also when
    the threshold is applied after measuring, as the workflow does."""
    record = write(tmp_path, synth(0, fs=100, seconds=5.0), fs=100)
    assert excluded(record).reason == "low_sampling_rate"
    with pytest.raises(EcgExclusion) as info:
        measure_record(record, DEFAULT)
    assert info.value.reason == "too_short" and info.value.fs_in == 100
    assert structural_exclusion(info.value, DEFAULT).reason == "low_sampling_rate"
    assert structural_exclusion(info.value, EcgSettings(min_fs=100)).reason == "too_short"


def test_thresholds_only_select_measured_records(tmp_path):
    """measure_record stores what the thresholds look at and ignores the thresholds themselves;
    process_record is measure_record followed by threshold_exclusion."""
    signal = synth(0)
    signal[:, MIMIC_LEADS.index("V4")] = 0.3
    record = write(tmp_path, signal)
    strict = EcgSettings(flat_std_mv=0.01)
    loose = EcgSettings(flat_std_mv=0.0)
    measured = measure_record(record, strict)
    np.testing.assert_array_equal(measured.signal, measure_record(record, loose).signal)
    np.testing.assert_array_equal(measured.signal, process_record(record, loose).signal)
    assert measured.flattest_lead == "V4" and measured.min_lead_std_mv < 1e-6
    assert threshold_exclusion(measured.measurements(), strict).reason == "flat_lead"
    assert threshold_exclusion(measured.measurements(), loose) is None
    # every threshold is a settings field, and none changes what is measured
    assert set(THRESHOLDS) <= set(EcgSettings.__dataclass_fields__)
    varied = EcgSettings(min_fs=100, clip_fraction=0.5, flat_std_mv=0.5, quality_min="Excellent")
    assert measure_record(record, varied).measurements() == measured.measurements()


def test_the_workflow_passes_the_thresholds_to_the_collect_job_only():
    common = (Path(__file__).parents[1] / "workflow/rules/common.smk").read_text()
    line = next(line for line in common.splitlines() if line.startswith("ECG_THRESHOLDS"))
    assert tuple(eval(line.split("=", 1)[1])) == THRESHOLDS


def test_wfdb_missing_samples_are_nan(tmp_path):
    record = clean_record(tmp_path)
    edit_adc(record, lambda adc: adc.__setitem__((slice(1000, 1003), MIMIC_LEADS.index("V2")), -32768))
    error = excluded(record)
    assert error.reason == "nan" and "V2" in error.detail, str(error)


def test_constant_lead_is_flat(tmp_path):
    signal = synth(0)
    signal[:, MIMIC_LEADS.index("V4")] = 0.3
    error = excluded(write(tmp_path, signal))
    assert error.reason == "flat_lead" and "V4" in error.detail, str(error)


def test_lead_saturated_for_5_percent_is_clipping(tmp_path):
    record = clean_record(tmp_path)
    v5 = MIMIC_LEADS.index("V5")

    def saturate(adc: np.ndarray) -> None:
        adc[1000:1125, v5] = 32767  # 125 + 125 samples = 5 % of 5000
        adc[3000:3125, v5] = -32767

    edit_adc(record, saturate)
    error = excluded(record)
    assert error.reason == "clipping" and "V5" in error.detail, str(error)


def test_a_few_samples_at_the_adc_limit_are_counted_but_kept(tmp_path):
    record = clean_record(tmp_path)
    edit_adc(record, lambda adc: adc.__setitem__((slice(1000, 1010), MIMIC_LEADS.index("I")), 32767))
    ecg = process_record(record, DEFAULT)
    assert ecg.max_clip_fraction == pytest.approx(10 / 5000)


def test_pure_noise_is_low_quality(tmp_path):
    noise = np.random.default_rng(0).normal(0.0, 0.3, (5000, N_LEADS))
    error = excluded(write(tmp_path, noise))
    assert error.reason == "low_quality", str(error)


def test_lead_that_neurokit_cannot_grade_is_unacceptable(tmp_path, monkeypatch):
    import neurokit2

    signal = process_record(clean_record(tmp_path), DEFAULT).signal
    assert signal_quality(signal, DEFAULT)[1] >= 1

    def no_peaks(*args, **kwargs):
        raise ValueError("no R peaks")

    monkeypatch.setattr(neurokit2, "ecg_findpeaks", no_peaks)
    assert signal_quality(signal, DEFAULT) == ("Unacceptable", 0.0)


def test_settings_are_validated_and_quality_can_be_switched_off(tmp_path):
    with pytest.raises(ValueError, match="quality_min"):
        EcgSettings(quality_min="Good")
    with pytest.raises(ValueError, match="lowpass_hz"):
        EcgSettings(lowpass_hz=200.0)
    off = EcgSettings(quality_leads=[])  # a YAML list becomes a tuple
    assert off.quality_leads == () and DEFAULT.n_samples == 2500
    noise = np.random.default_rng(0).normal(0.0, 0.3, (5000, N_LEADS))
    assert process_record(write(tmp_path, noise), off).quality == "not assessed"


# --- longer and faster records --------------------------------------------------------------------


def test_1000_hz_20_s_record_keeps_its_first_10_s(tmp_path):
    signal = synth(3, fs=1000, seconds=20.0)
    long = process_record(write(tmp_path / "long", signal, fs=1000), DEFAULT)
    first = process_record(write(tmp_path / "first", signal[:10_000], fs=1000), DEFAULT)
    assert long.signal.shape == (12, 2500) and (long.fs_in, long.duration_in_s) == (1000.0, 20.0)
    diff = np.abs(long.signal - first.signal).max()
    assert diff < 1e-5, f"20 s record differs from its first 10 s by {diff} mV"


# --- the demo's records stay in the cohort -----------------------------------------------------------


@pytest.mark.parametrize(
    ("qrs_ms", "t_amp", "hr_bpm"),
    [(90.0, 1.0, 70.0), (150.0, 1.0, 55.0), (150.0, -0.5, 55.0)],
    ids=["normal", "wide-qrs-slow", "wide-qrs-slow-inverted-t"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demo_records_are_not_excluded(tmp_path, seed, qrs_ms, t_amp, hr_bpm):
    record = write(tmp_path, synth(seed, qrs_ms=qrs_ms, t_amp=t_amp, hr_bpm=hr_bpm))
    try:
        ecg = process_record(record, DEFAULT)
    except EcgExclusion as error:
        pytest.fail(f"demo ECG (qrs {qrs_ms} ms, T {t_amp}, HR {hr_bpm}, seed {seed}) excluded: {error}")
    assert ecg.quality_score >= 1


def test_library_raises_no_warnings_under_W_error(tmp_path):
    record = clean_record(tmp_path)
    code = (
        "import sys; from hftri_mimic.ecg.signal import EcgSettings, process_record; "
        "print(process_record(sys.argv[1], EcgSettings()).quality)"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, str(record)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"hftri_mimic.ecg.signal under -W error:\n{proc.stderr[-3000:]}"


# --- the stage's shortcuts give what the libraries they stand in for give ------------------------------


def varied_demo_signals() -> list[tuple[str, np.ndarray, int]]:
    """Demo ECGs from clean to unusable: (name, (n, 12) mV in MIMIC order, fs)."""
    from hftri_mimic.demo.generate import apply_ecg_defect

    rng = np.random.default_rng(11)
    signals = []
    for i in range(36):
        fs = (500, 1000, 250)[i % 3]
        hr = float(rng.uniform(45, 160))
        shape = {"qrs_ms": float(rng.uniform(80, 150)), "t_amp": float(rng.uniform(-0.5, 1.2)), "hr_bpm": hr}
        x = synth_ecg(rng, **shape, fs=fs, n_samples=10 * fs)
        kind = ("clean", "motion", "white noise", "wander")[i % 4]
        if kind == "motion":
            x = apply_ecg_defect(x, "noise", rng)
        elif kind == "white noise":
            x = x + rng.normal(0.0, float(rng.uniform(0.05, 0.8)), x.shape)
        elif kind == "wander":
            x = x + float(rng.uniform(0.2, 3.0)) * np.sin(np.linspace(0, rng.uniform(5, 80) * np.pi, len(x)))[:, None]
        signals.append((f"{kind} {fs} Hz {hr:.0f} bpm", x, fs))
    return signals


def test_header_based_read_gives_rdrecords_samples(tmp_path, monkeypatch):
    import hftri_mimic.ecg.signal as ecg_module

    records = [ptb_record()]
    for name, x, fs in varied_demo_signals()[:6]:
        records.append(write(tmp_path / name.replace(" ", "_"), x, fs=fs))
    for record in records:
        header = wfdb.rdheader(str(record))
        channels = lead_order(header.sig_name)
        n_keep = round(DEFAULT.duration_s * header.fs)
        expected = wfdb.rdrecord(str(record), sampto=n_keep, channels=channels, physical=False).d_signal.T
        fast = ecg_module._read_digital(header, record, n_keep, channels)
        assert fast.dtype == np.int64 and fast.flags.c_contiguous
        np.testing.assert_array_equal(fast, expected, err_msg=str(record))
        with monkeypatch.context() as patch:  # a wfdb without the private reader: rdrecord itself
            patch.setattr(ecg_module, "_RD_SEGMENT", None)
            np.testing.assert_array_equal(ecg_module._read_digital(header, record, n_keep, channels), expected)


def test_zero_phase_filters_are_scipy_sosfiltfilt():
    from hftri_mimic.ecg.signal import _ZeroPhaseFilter

    x = reference_ptb()  # (12, 2500)
    noise = np.random.default_rng(0).normal(0.0, 1.0, (3, 2500))
    for order, low, high, fs in [(5, 0.67, 40.0, 250), (4, 0.5, 100.0, 500), (1, 1.0, 30.0, 250), (8, 0.05, 45.0, 250)]:
        for sos in (
            scipy.signal.butter(order, low, btype="highpass", output="sos", fs=fs),
            scipy.signal.butter(order, high, btype="lowpass", output="sos", fs=fs),
        ):
            for signal in (x, noise):
                np.testing.assert_array_equal(
                    _ZeroPhaseFilter.of(sos)(signal), scipy.signal.sosfiltfilt(sos, signal, axis=1)
                )


def test_kurtosis_is_scipys():
    import scipy.stats

    from hftri_mimic.ecg.signal import _pearson_kurtosis

    rng = np.random.default_rng(0)
    leads = [*reference_ptb(), rng.normal(size=2500), rng.uniform(size=2500) + 1e3, np.sin(np.arange(2500) / 7)]
    for lead in leads:
        assert _pearson_kurtosis(lead) == scipy.stats.kurtosis(lead, fisher=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns about the constant signal
        assert np.isnan(scipy.stats.kurtosis(np.full(2500, 0.7), fisher=False))
    assert np.isnan(_pearson_kurtosis(np.full(2500, 0.7)))


def test_quality_levels_and_exclusions_are_neurokit2s(tmp_path):
    """Our zhao2018 grading against neurokit2.ecg_quality itself: the 12 processed leads of the real PTB
    record and lead II of demo records from clean to unusable; the same level on every lead, hence the
    same low_quality exclusions."""
    import neurokit2 as nk

    unassessed = EcgSettings(quality_leads=())
    ii = ST_MEM_LEADS.index("II")
    ours, theirs = [], []
    signals = [process_record(ptb_record(), unassessed).signal[lead] for lead in range(12)]
    outcomes = []
    for name, x, fs in varied_demo_signals():
        record = write(tmp_path / name.replace(" ", "_"), x, fs=fs)
        signals.append(process_record(record, unassessed).signal[ii])
        try:
            outcomes.append((name, process_record(record, DEFAULT).quality))
        except EcgExclusion as error:
            outcomes.append((name, error.reason))
    for lead in signals:
        ours.append(signal_quality(np.tile(lead, (12, 1)), DEFAULT)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.append(nk.ecg_quality(np.asarray(lead, dtype=np.float64), sampling_rate=250, method="zhao2018"))
    assert ours == theirs, [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert len(set(theirs)) == 3, f"the records should span all three levels, got {sorted(set(theirs))}"
    expected = [
        "low_quality" if level == "Unacceptable" else level
        for level in theirs[12:]  # the demo records' lead II, in order
    ]
    assert [outcome for _, outcome in outcomes] == expected, outcomes
