"""Explanations of the trimodal TGMM (models/explain/, rule explain; paper §5.5, Figs. 8-9) on a small trained
demo run: what they contain and that they are complete. Whether they find the planted signal is checked on the
default demo (tests/test_default_demo.py; models/README.md, "Do the explanations find the planted signal?"): this
run is too small for its models to learn much."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from hftri_mimic.demo.ecg import ecg_intervals, qrs_t_windows, qrs_windows
from hftri_mimic.demo.generate import ecg_record_rng
from models.config import SLOTS


@pytest.fixture(scope="module")
def explained(trained_run) -> Path:
    """The small trained demo run (conftest: `all`, which explains the trimodal diagnosis and prognosis models for
    up to 10 test patients per class with all three modalities)."""
    return trained_run / "results"


def test_qrs_windows_replay_the_demo_record():
    from hftri_mimic.demo.ecg import synth_ecg

    signal = synth_ecg(ecg_record_rng(7, 40000001), qrs_ms=130.0, t_amp=1.0, hr_bpm=75.0)  # (5000, 12) at 500 Hz
    windows = qrs_windows(ecg_record_rng(7, 40000001), qrs_ms=130.0, hr_bpm=75.0)
    assert windows[0].tolist() == [200.0, 330.0], "the first full beat's QRS starts at 200 ms (ecg_intervals)"
    energy = np.abs(signal - np.median(signal, axis=0)).sum(1)
    inside = np.zeros(len(energy), dtype=bool)
    for start, end in windows / 2:  # ms -> samples at 500 Hz
        inside[int(start) : int(np.ceil(end))] = True
    assert energy[inside].mean() > 2.5 * energy[~inside].mean(), "the windows miss the QRS complexes"


def test_qrs_t_windows_replay_the_demo_record():
    """QRS onset .. T end of every beat: the same onsets as the QRS windows, the first one ending at the template's
    T end; the windows hold the QRS complexes and T waves, the rest is P waves and baseline (plus noise and wander)."""
    from hftri_mimic.demo.ecg import synth_ecg

    signal = synth_ecg(ecg_record_rng(7, 40000001), qrs_ms=130.0, t_amp=1.0, hr_bpm=75.0)  # (5000, 12) at 500 Hz
    windows = qrs_t_windows(ecg_record_rng(7, 40000001), qrs_ms=130.0, hr_bpm=75.0)
    qrs = qrs_windows(ecg_record_rng(7, 40000001), qrs_ms=130.0, hr_bpm=75.0)
    assert np.array_equal(windows[:, 0], qrs[: len(windows), 0])
    assert round(windows[0, 1]) == ecg_intervals(130.0, 75.0)["t_end"] == 598
    assert (np.diff(windows.ravel()) >= 0).all(), "one beat's window runs into the next"
    energy = np.abs(signal - np.median(signal, axis=0)).sum(1)
    inside = np.zeros(len(energy), dtype=bool)
    for start, end in windows / 2:  # ms -> samples at 500 Hz
        inside[int(start) : int(np.ceil(end))] = True
    assert 0.3 < inside.mean() < 0.7
    assert energy[inside].mean() > 2.5 * energy[~inside].mean(), "the windows miss the QRS and T waves"


def test_planted_ecg_masks_hold_the_stored_beats(explained):
    """The planted-region masks of hftri_mimic.tools.planted_check line up with the stored 250 Hz records (source
    truth and
    replayed beat times, 10 s cut from the generator's 500 Hz record): the QRS complexes and T waves are inside."""
    import zarr

    from hftri_mimic.tools.planted_check import planted_ecg_masks

    manifest = pl.read_parquet(explained / "hftri/manifest.parquet").filter(pl.col("has_ecg")).head(8)
    masks = planted_ecg_masks(explained, manifest["subject_id"].to_list(), 2500)
    for row, inside in zip(manifest.iter_rows(named=True), masks, strict=True):
        ecg = zarr.open_array(store=str(explained / row["ecg_zarr"]), path="ecg", mode="r")[row["ecg_row"]]
        energy = np.abs(ecg).sum(0)
        assert 0.3 < inside.mean() < 0.7
        assert energy[inside].mean() > 2.0 * energy[~inside].mean(), row["subject_id"]


def test_erase_waves_leaves_a_straight_baseline_and_the_rest_untouched():
    from models.explain import erase_waves

    record = np.random.default_rng(0).normal(size=(12, 200)).astype(np.float32)
    erased = erase_waves(record, [(50, 60), (120, 121)])
    outside = np.ones(200, dtype=bool)
    outside[50:60] = outside[120] = False
    assert np.array_equal(erased[:, outside], record[:, outside])
    expected = record[:, 49:50] + (record[:, 60:61] - record[:, 49:50]) * np.arange(1, 11) / 11
    assert np.allclose(erased[:, 50:60], expected, atol=1e-6)
    assert np.allclose(erased[:, 120], (record[:, 119] + record[:, 121]) / 2, atol=1e-6)


def test_delineated_waves_match_the_planted_beats(explained):
    """neurokit2's delineation (what the wave explanation erases) finds the demo's beats where the generator put
    them: the QRS complexes (mostly) and T waves inside the planted QRS onset .. T end regions, the P waves outside."""
    import zarr

    from hftri_mimic.tools.planted_check import planted_ecg_masks
    from models.explain import delineate_waves

    manifest = pl.read_parquet(explained / "hftri/manifest.parquet").filter(pl.col("has_ecg")).head(8)
    masks = planted_ecg_masks(explained, manifest["subject_id"].to_list(), 2500)
    for row, planted in zip(manifest.iter_rows(named=True), masks, strict=True):
        ecg = zarr.open_array(store=str(explained / row["ecg_zarr"]), path="ecg", mode="r")[row["ecg_row"]]
        waves = delineate_waves(ecg, 250)
        assert all(len(waves[name]) >= 5 for name in ("P", "QRS", "T")), (row["subject_id"], waves)

        inside = {name: np.mean([planted[a:b].mean() for a, b in waves[name]]) for name in ("P", "QRS", "T")}
        # neurokit2 puts the QRS onset a little early (in the PR segment), hence 0.6 rather than 0.9.
        assert inside["QRS"] > 0.6 and inside["T"] > 0.9 and inside["P"] < 0.1, (row["subject_id"], inside)


def test_occlusions_are_score_differences(explained, trained_run):
    """ECG occlusion with non-overlapping windows is score(record) - score(record with the window at 0 mV), wave
    occlusion is score(record) - score(record with that wave erased), and sentence occlusion is score(text) -
    score(the text with that sentence's tokens replaced by [MASK])."""
    from hftri_mimic.tools.planted_check import run_settings
    from models import explain as ex

    run = ex.load_run(explained, run_settings(trained_run), explained / "train/diagnosis/lab+ecg+echo", "diagnosis")
    patients = ex.choose_patients(run, explained, 1)
    values, scores = ex.ecg_occlusion(run, explained, patients, window=250, stride=250)
    batch = ex.raw_batch(run, explained, patients["subject_id"].to_list())
    fixed = ex.raw_vectors(run.model, batch)
    occluded = batch["ecg"].clone()
    occluded[:, :, 500:750] = 0.0
    with torch.no_grad():
        expected = scores - ex.fused_score(run, {**fixed, "ecg": ex.raw_ecg(run.model, occluded)}).numpy()
    assert np.allclose(values[:, 500:750], expected[:, None], atol=1e-5)
    assert np.allclose(values[:, 600], expected, atol=1e-5) and not np.allclose(values[:, 600], values[:, 100])

    waves = ex.ecg_wave_occlusion(run, explained, patients, batch=batch, fixed=fixed)
    assert waves.height == 3 * patients.height and (waves["beats"] > 0).all()
    records = batch["ecg"].numpy()
    for wave in ("P", "QRS", "T"):
        erased = np.stack([ex.erase_waves(r, ex.delineate_waves(r, 250)[wave]) for r in records])
        with torch.no_grad():
            without = ex.fused_score(run, {**fixed, "ecg": ex.raw_ecg(run.model, torch.as_tensor(erased))}).numpy()
        rows = waves.filter(wave=wave)
        assert rows["subject_id"].to_list() == patients["subject_id"].to_list()
        assert np.allclose(rows["attribution"].to_numpy(), rows["score"].to_numpy() - without, atol=1e-6)

    sentences = ex.sentence_occlusion(run, explained, patients.head(1))
    subject = patients["subject_id"][0]
    text = pl.read_parquet(explained / "hftri/text.parquet").filter(subject_id=subject)["text"][0]
    parts = text.rstrip(".").split(". ")
    assert sentences["sentence_label"].to_list() == [p.split(" of the ")[0] for p in parts]
    tokenizer = run.model.text.tokenizer
    for k in (0, len(parts) - 1):
        ids = [tokenizer.cls_token_id]
        for j, part in enumerate(parts):
            piece = tokenizer(part + ".", add_special_tokens=False)["input_ids"]
            ids += [tokenizer.mask_token_id] * len(piece) if j == k else piece
        ids = torch.tensor([[*ids, tokenizer.sep_token_id]])
        with torch.no_grad():
            lab = ex.raw_lab(run.model, ids, torch.ones_like(ids))
            masked = float(ex.fused_score(run, {**{m: v[:1] for m, v in fixed.items()}, "lab": lab})[0])
        assert sentences["attribution"][k] == pytest.approx(sentences["score"][0] - masked, abs=1e-5)


def test_text_attributions_are_complete_and_written_as_html(explained):
    """Integrated gradients' completeness (sum of attributions = score - baseline score, up to Captum's delta)
    and the HTML colours every token."""
    tokens = pl.read_parquet(explained / "eval/explain/text_tokens.parquet")
    per_patient = tokens.group_by("task", "subject_id").agg(pl.col("delta").first(), pl.col("attribution").abs().sum())
    assert (per_patient["delta"].abs() < 0.1 * per_patient["attribution"] + 1e-3).all(), per_patient
    page = (explained / "eval/explain/text_attributions.html").read_text()
    assert page.count("<span class='t'") == tokens.height
    assert "rgba(220,40,40" in page and "rgba(40,90,220" in page, "no red and blue tokens"
    for name in (
        "text_attributions", "ecg_gradcam", "ecg_waves", "echo_gradcam", "attention_diagnosis", "attention_prognosis",
    ):  # fmt: skip
        assert (explained / f"eval/explain/{name}.png").stat().st_size > 10_000, name


def test_attention_matrices_are_distributions_per_class(explained):
    frame = pl.read_parquet(explained / "eval/explain/attention.parquet")
    assert set(frame["task"]) == {"diagnosis", "prognosis"} and set(frame["label"]) == {0, 1}
    tgm = frame.filter(module="tgm").group_by("task", "label", "query").agg(pl.col("weight").sum())
    assert tgm.height == 2 * 2 * len(SLOTS)
    assert np.allclose(tgm["weight"], 1.0, atol=1e-5), "TGM rows (7 slots + prompt) must sum to 1"
    mffm = frame.filter(module="mffm").group_by("task", "label", "slot", "query").agg(pl.col("weight").sum())
    members = {row["slot"]: row["slot"].split("+") for row in mffm.iter_rows(named=True)}
    for row in mffm.iter_rows(named=True):
        expected = 1.0 if row["query"] in members[row["slot"]] else 0.0
        assert row["weight"] == pytest.approx(expected, abs=1e-5), row


def test_echo_gradcam_covers_present_views_only(explained):
    cams = pl.read_parquet(explained / "eval/explain/echo_gradcam.parquet")
    manifest = pl.read_parquet(explained / "hftri/manifest.parquet")
    assert cams["cam"].list.len().n_unique() == 1
    mass = cams.with_columns(pl.col("cam").list.sum().alias("mass"))
    assert (mass["mass"] >= 0).all()
    for (subject,), rows in mass.group_by(["subject_id"]):
        assert rows["mass"].sum() > 0, "a patient's echo map is empty"
        n_views = manifest.filter(subject_id=subject)["n_views_present"][0]
        assert rows.filter(task=rows["task"][0])["mass"].gt(0).sum() <= n_views
