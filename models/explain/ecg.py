"""(c) ECG explanations: window and wave occlusion, and (d) Grad-CAM++ over leads x time (Fig. 9;
models/explain/__init__.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from models.explain.gradcam import gradcam_plusplus_maps
from models.explain.trained_run import ExplainedRun, fused_score, raw_batch, raw_ecg, raw_vectors

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- (c) ECG occlusion


@torch.no_grad()
def ecg_occlusion(
    run: ExplainedRun,
    out_dir: str | Path,
    patients: pl.DataFrame,
    *,
    window: int = 25,
    stride: int = 25,
    batch: Mapping[str, Tensor] | None = None,
    fixed: Mapping[str, Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Occlusion over ECG time for ``patients`` (subject_id, label): Captum's ``Occlusion`` sets a window of
    ``window`` samples of all 12 leads to 0 mV (isoelectric) at every ``stride`` samples of the raw record; each
    sample's attribution is the mean over the windows covering it of score(record) - score(occluded record), so
    it is signed: positive where the signal pushes towards the positive answer. Lab and echo vectors fixed.

    ``batch``, ``fixed``: the patients' raw batch and its encoder vectors (:func:`raw_vectors`) when already at hand.
    Returns (attributions (N, T) float32 on the record's T samples, scores (N,)).
    """
    from captum.attr import Occlusion

    model = run.model
    if batch is None:
        batch = raw_batch(run, Path(out_dir), patients["subject_id"].to_list())
    if fixed is None:
        fixed = raw_vectors(model, batch)
    ecg = batch["ecg"]

    def forward(x: Tensor, lab: Tensor, echo: Tensor) -> Tensor:
        return fused_score(run, {"lab": lab, "ecg": raw_ecg(model, x), "echo": echo})

    values = Occlusion(forward).attribute(
        ecg, sliding_window_shapes=(ecg.shape[1], window), strides=(ecg.shape[1], stride), baselines=0.0,
        additional_forward_args=(fixed["lab"], fixed["echo"]), perturbations_per_eval=8,
    )  # fmt: skip
    scores = forward(ecg, fixed["lab"], fixed["echo"])
    return values[:, 0].numpy().astype(np.float32), scores.numpy()


# ECG waves as neurokit2 delineates them: (onset column, offset column) of ``ecg_delineate``'s output.
WAVES: dict[str, tuple[str, str]] = {
    "P": ("ECG_P_Onsets", "ECG_P_Offsets"),
    "QRS": ("ECG_R_Onsets", "ECG_R_Offsets"),
    "T": ("ECG_T_Onsets", "ECG_T_Offsets"),
}
DELINEATION_LEAD = 1  # lead II (ST-MEM lead order), the usual rhythm and delineation lead


def delineate_waves(record: np.ndarray, fs: int) -> dict[str, list[tuple[int, int]]]:
    """[onset, offset + 1) sample intervals of every P wave, QRS complex and T wave of a (12, T) record, from
    neurokit2's wavelet delineation (``ecg_delineate(method="dwt")``) of lead II after ``ecg_clean``. A wave whose
    onset or offset neurokit2 could not place is left out; a flat or beatless record gives empty lists."""
    from hftri_mimic.ecg.signal import _neurokit2

    nk = _neurokit2()
    empty: dict[str, list[tuple[int, int]]] = {name: [] for name in WAVES}
    lead = np.asarray(record[DELINEATION_LEAD], dtype=np.float64)
    if not np.isfinite(lead).all() or lead.std() <= 1e-6:
        return empty
    try:
        cleaned = nk.ecg_clean(lead, sampling_rate=fs)
        _, peaks = nk.ecg_peaks(cleaned, sampling_rate=fs)
        if len(peaks["ECG_R_Peaks"]) < 3:
            return empty
        _, waves = nk.ecg_delineate(cleaned, peaks["ECG_R_Peaks"], sampling_rate=fs, method="dwt")
        intervals = dict(empty)
        for name, (onset_key, offset_key) in WAVES.items():
            pairs = zip(waves[onset_key], waves[offset_key], strict=True)
            intervals[name] = [
                (int(on), int(off) + 1) for on, off in pairs if np.isfinite(on) and np.isfinite(off) and off >= on
            ]
    except (ValueError, IndexError, KeyError, ZeroDivisionError) as error:  # a record neurokit2 cannot delineate
        log.warning("an ECG could not be delineated (%s): no wave attributions for it", type(error).__name__)
        return empty
    return intervals


def erase_waves(record: np.ndarray, intervals: Sequence[tuple[int, int]]) -> np.ndarray:
    """A copy of the (12, T) record with every interval replaced, in all leads, by the straight line between the
    samples just outside it: the wave is gone and the baseline runs on, as in a beat without that wave."""
    erased = np.array(record, dtype=np.float32, copy=True)
    length = erased.shape[1]
    for start, end in intervals:
        start, end = max(start, 1), min(end, length - 1)
        if end <= start:
            continue
        weight = np.linspace(0.0, 1.0, end - start + 2, dtype=np.float32)[1:-1]
        erased[:, start:end] = erased[:, start - 1 : start] * (1 - weight) + erased[:, end : end + 1] * weight
    return erased


@torch.no_grad()
def ecg_wave_occlusion(
    run: ExplainedRun,
    out_dir: str | Path,
    patients: pl.DataFrame,
    *,
    fs: int = 250,
    batch: Mapping[str, Tensor] | None = None,
    fixed: Mapping[str, Tensor] | None = None,
) -> pl.DataFrame:
    """What each kind of ECG wave contributes, in the clinician's units: per patient and wave (P, QRS, T), the score
    change when every such wave of the record is erased (:func:`delineate_waves`, :func:`erase_waves`), i.e.
    score(record) - score(record without its QRS complexes). Signed like the other occlusions; lab and echo fixed.

    Unlike the sliding 0 mV window of :func:`ecg_occlusion`, the erased record stays a plausible ECG (an
    isoelectric line where the wave was) and a wave is removed whole, whatever its width.
    Returns task, subject_id, label, score, wave, beats (waves erased), attribution (NaN with no wave found).
    """
    model = run.model
    if batch is None:
        batch = raw_batch(run, Path(out_dir), patients["subject_id"].to_list())
    if fixed is None:
        fixed = raw_vectors(model, batch)
    records = batch["ecg"].numpy()

    def score(ecg: np.ndarray) -> np.ndarray:
        raw = {"lab": fixed["lab"], "ecg": raw_ecg(model, torch.as_tensor(ecg)), "echo": fixed["echo"]}
        return fused_score(run, raw).numpy()

    delineated = [delineate_waves(record, fs) for record in records]
    scores = score(records)
    rows = []
    for wave in WAVES:
        erased = score(np.stack([erase_waves(r, d[wave]) for r, d in zip(records, delineated, strict=True)]))
        for i, (subject, label) in enumerate(patients.select("subject_id", "label").iter_rows()):
            beats = len(delineated[i][wave])
            change = float(scores[i] - erased[i]) if beats else float("nan")
            rows.append((run.task, subject, label, float(scores[i]), wave, beats, change))
    schema = {
        "task": pl.String, "subject_id": pl.Int64, "label": pl.Int64, "score": pl.Float64, "wave": pl.String,
        "beats": pl.Int64, "attribution": pl.Float64,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")


class _ECGCrops(nn.Module):
    """(B·K, 12, 2250) standardised crops -> (B,) score with the patients' lab and echo vectors fixed."""

    def __init__(self, run: ExplainedRun, crops: int, lab: Tensor, echo: Tensor) -> None:
        super().__init__()
        self.run, self.crops, self.lab, self.echo = run, crops, lab, echo
        self.vit = run.model.ecg.vit

    def forward(self, x: Tensor) -> Tensor:
        ecg = self.vit(x).reshape(-1, self.crops, self.vit.config.width).mean(dim=1)
        return fused_score(self.run, {"lab": self.lab, "ecg": ecg, "echo": self.echo})


def ecg_gradcam(run: ExplainedRun, out_dir: str | Path, patients: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM++ over ECG leads x time for ``patients`` (subject_id, label).

    Returns (maps (N, 12, T) float32 on the record's T = 2500 samples, ST-MEM lead order; scores (N,)).
    """
    model = run.model
    batch = raw_batch(run, Path(out_dir), patients["subject_id"].to_list())
    fixed = raw_vectors(model, batch)
    ecg = batch["ecg"]
    transform = model.ecg.transform
    crops = transform(ecg, training=False)  # (N, K, 12, L)
    n, k, leads, length = crops.shape
    patch = model.ecg.vit.config.patch_size
    n_patches = length // patch

    def reshape(tokens: Tensor) -> Tensor:  # (N·K, 12·(n+2), W) -> (N·K, W, 12, n), SEP tokens dropped
        return tokens.reshape(tokens.shape[0], leads, n_patches + 2, -1)[:, :, 1:-1].permute(0, 3, 1, 2)

    wrapper = _ECGCrops(run, k, fixed["lab"], fixed["echo"])
    layer = model.ecg.vit.blocks[-1]
    maps = gradcam_plusplus_maps(wrapper, layer, reshape, crops.flatten(0, 1).clone())  # (N·K, 12, n)
    maps = maps.reshape(n, k, leads, n_patches)
    total = ecg.shape[-1]
    summed = np.zeros((n, leads, total), dtype=np.float64)
    cover = np.zeros(total, dtype=np.float64)
    for j, start in enumerate(transform.eval_starts(total)):
        summed[:, :, start : start + n_patches * patch] += np.repeat(maps[:, j], patch, axis=-1)
        cover[start : start + n_patches * patch] += 1
    with torch.no_grad():
        scores = wrapper(crops.flatten(0, 1)).numpy()
    return (summed / np.maximum(cover, 1)).astype(np.float32), scores
