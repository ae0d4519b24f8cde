"""Explanations of the trimodal TGMM (paper §5.5, Figures 8-9; docs/MODEL.md).

Five views of what a trained ``lab+ecg+echo`` run looked at, for diagnosis and prognosis:

- **Attention matrices** (Fig. 8, :func:`attention_by_class`): the TGM attention (Eq. 9) of each of the 7
  specific/shared feature slots (t, ts, s, sm, m, tm, tsm) over the 7 slots and the prompt tokens, and the MFFM
  attention (Eq. 2) of each shared slot (query modality x key modality), averaged over the test patients of each
  class (diagnosis: prevalent HF 0/1; prognosis: incident HF 0/1) that have all three modalities.
- **Lab-text token attributions** (Fig. 9, :func:`text_attributions`): Captum's ``LayerIntegratedGradients`` on
  BERT's embedding layer, from a baseline where every ordinary token is ``[PAD]`` ([CLS]/[SEP] kept), summed
  over the embedding width: one signed number per WordPiece token (red = towards the positive answer).
- **Occlusion** (:func:`ecg_occlusion`, :func:`sentence_occlusion`; Captum's ``Occlusion`` / ``FeatureAblation``):
  the score change when a 100 ms window of all 12 ECG leads is set to 0 mV (isoelectric), per sample, and when the
  tokens of one lab-text sentence are replaced by ``[MASK]``; signed (positive = the part pushes towards the
  positive answer) and on the raw inputs, so the ECG encoder's per-crop standardisation is part of what is
  explained. (Input-level integrated gradients from a 0 mV baseline would be meaningless here: standardisation
  makes the encoder blind to the record's scale, so the whole path is one constant score and a jump at 0.)
- **Wave occlusion** (:func:`ecg_wave_occlusion`): the score change when every P wave, every QRS complex or every T
  wave of the record, as neurokit2 delineates them, is erased (replaced by the baseline between its edges): what
  each part of the beat contributes, in a clinician's units.
- **Grad-CAM++** (Fig. 9, :func:`ecg_gradcam`, :func:`echo_gradcam`) with pytorch-grad-cam's ``GradCAMPlusPlus``
  (its hooks and its Eq. 19 channel weights): ECG over leads x time on the last ST-MEM block's 12 x 30 patch
  tokens; echo over views x frames on the input of the last MViT block's attention (``norm1``: the class token
  the head reads attends to these tokens; later layers no longer mix tokens, so their token gradients are zero).

Every explanation is of one score per patient, the positive side of the task: the log-odds of the "heart failure"
answer (diagnosis) or the risk ŷ (prognosis).  Gradients flow from that score through the trained TGMM, the
trained projections, the standardisation of the frozen features (``feature_stats.pt``) and the frozen encoders to
the raw inputs (lab text tokens, the (12, 2500) ECG record, the echo clips), i.e. the model the workflow trained,
run on raw data the way :mod:`models.training.features` encoded it.  An ensemble run is explained by its first member.

Figures and the HTML page number the patients 1, 2, ... in the order of the parquet files (which carry the
subject ids) rather than printing identifiers.

Grad-CAM++ maps are kept un-normalised (ReLU of the weighted activations, no per-image min-max scaling as
``GradCAMPlusPlus.__call__`` would do), so leads, views, crops and patients stay comparable; figures normalise per
patient.  The ECG encoder averages three overlapping 2250-sample crops (starts 0, 125, 250): each crop's map is
laid on the record's 2500 samples (a patch token covers its 75 samples) and overlapping crops are averaged.

The package, one module per kind of explanation: ``trained_run`` (the run, its score, the chosen patients),
``attention`` (a), ``text`` (b), ``ecg`` (c, and d for the ECG), ``echo`` (d for echo), ``gradcam`` (the shared
Grad-CAM++ maps), ``figures``; :func:`explain`, here, runs them all for the workflow's ``explain`` rule.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.explain.attention import attention_by_class
from models.explain.ecg import delineate_waves, ecg_gradcam, ecg_occlusion, ecg_wave_occlusion, erase_waves
from models.explain.echo import echo_gradcam
from models.explain.figures import (
    attention_figure,
    ecg_figure,
    echo_figure,
    empty_figure,
    occlusion_figure,
    text_figure,
    text_html,
    waves_figure,
)
from models.explain.text import sentence_occlusion, text_attributions
from models.explain.trained_run import (
    TRIMODAL,
    ExplainedRun,
    choose_patients,
    fused_score,
    load_run,
    raw_batch,
    raw_ecg,
    raw_echo,
    raw_lab,
    raw_vectors,
    run_dir,
)
from models.training.experiment import Experiment

log = logging.getLogger(__name__)

__all__ = [
    "TRIMODAL",
    "ExplainedRun",
    "attention_by_class",
    "choose_patients",
    "delineate_waves",
    "ecg_gradcam",
    "ecg_occlusion",
    "ecg_wave_occlusion",
    "echo_gradcam",
    "erase_waves",
    "explain",
    "fused_score",
    "load_run",
    "raw_batch",
    "raw_ecg",
    "raw_echo",
    "raw_lab",
    "raw_vectors",
    "run_dir",
    "sentence_occlusion",
    "text_attributions",
]


def explain(
    out_dir: str | Path,
    model_settings: Mapping[str, Any],
    optim: Mapping[str, Any],
    work_dirs: Mapping[str, str | Path],
    dest: str | Path,
    *,
    patients: int = 2,
    ig_steps: int = 32,
    features_path: str | Path | None = None,
    threads: int = 1,
    ecg_fs: int = 250,
) -> dict[str, Path]:
    """Every explanation of the trimodal runs of ``work_dirs`` (task -> ``train/{task}/lab+ecg+echo``) into
    ``dest``: attention.parquet + attention_{task}.png (Fig. 8); text_tokens.parquet, text_attributions.html and
    .png; text_sentences.parquet (sentence occlusion); ecg_gradcam.parquet + .png; ecg_occlusion.parquet + .png;
    ecg_waves.parquet + .png (wave occlusion); echo_gradcam.parquet + .png (Fig. 9). ``patients`` per class per
    task; ``ecg_fs``: the stored ECG records' sampling rate."""
    from hftri_mimic.ecg.signal import ST_MEM_LEADS
    from hftri_mimic.echo.dicom import VIEWS

    out = Path(out_dir)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    experiment = Experiment.from_settings(
        out, model_settings, optim, dest, threads=threads, features_path=features_path
    )
    attention, tokens, sentences, waves, ecg_rows, occlusion_rows, echo_rows = [], [], [], [], [], [], []
    signals: dict[int, np.ndarray] = {}
    for task, work_dir in work_dirs.items():
        run = load_run(out, model_settings, work_dir, task)
        attention.append(attention_by_class(run, experiment))
        chosen = choose_patients(run, out, patients)
        log.info("%s: explaining %d test patients (%s)", task, chosen.height, run.path)
        if chosen.height == 0:
            continue
        tokens.append(text_attributions(run, out, chosen, n_steps=ig_steps))
        maps, scores = ecg_gradcam(run, out, chosen)
        batch = raw_batch(run, out, chosen["subject_id"].to_list())
        fixed = raw_vectors(run.model, batch)
        sentences.append(sentence_occlusion(run, out, chosen, fixed=fixed))
        occluded, _ = ecg_occlusion(run, out, chosen, batch=batch, fixed=fixed)
        waves.append(ecg_wave_occlusion(run, out, chosen, fs=ecg_fs, batch=batch, fixed=fixed))
        echo = echo_gradcam(run, out, chosen)
        for i, (subject, label) in enumerate(chosen.iter_rows()):
            signals[subject] = batch["ecg"][i].numpy()
            occlusion_rows.append((task, subject, label, float(scores[i]), occluded[i].tolist()))
            for lead, name in enumerate(ST_MEM_LEADS):
                ecg_rows.append((task, subject, label, float(scores[i]), lead, name, maps[i, lead].tolist()))
            for view, name in enumerate(VIEWS):
                echo_rows.append((task, subject, label, view, name, echo[i, view].tolist()))
    paths = {"attention": dest / "attention.parquet"}
    frame = pl.concat(attention)
    frame.write_parquet(paths["attention"])
    for task in work_dirs:
        paths[f"attention_{task}"] = dest / f"attention_{task}.png"
        if frame.filter(task=task).is_empty():
            empty_figure(paths[f"attention_{task}"])
        else:
            attention_figure(frame, task, paths[f"attention_{task}"])
    token_frame = pl.concat(tokens) if tokens else pl.DataFrame()
    paths["text_tokens"] = dest / "text_tokens.parquet"
    token_frame.write_parquet(paths["text_tokens"])
    paths["text_html"] = dest / "text_attributions.html"
    paths["text_html"].write_text(text_html(token_frame) if tokens else "<html><body>no patients</body></html>")
    paths["text_png"] = dest / "text_attributions.png"
    paths["text_sentences"] = dest / "text_sentences.parquet"
    (pl.concat(sentences) if sentences else pl.DataFrame()).write_parquet(paths["text_sentences"])
    ecg_schema = {
        "task": pl.String, "subject_id": pl.Int64, "label": pl.Int64, "score": pl.Float64, "lead_index": pl.Int64,
        "lead": pl.String, "cam": pl.List(pl.Float32),
    }  # fmt: skip
    echo_schema = {
        "task": pl.String, "subject_id": pl.Int64, "label": pl.Int64, "view_index": pl.Int64, "view": pl.String,
        "cam": pl.List(pl.Float32),
    }  # fmt: skip
    ecg_frame = pl.DataFrame(ecg_rows, schema=ecg_schema, orient="row")
    occlusion_schema = {
        "task": pl.String, "subject_id": pl.Int64, "label": pl.Int64, "score": pl.Float64,
        "attribution": pl.List(pl.Float32),
    }  # fmt: skip
    occlusion_frame = pl.DataFrame(occlusion_rows, schema=occlusion_schema, orient="row")
    paths["ecg_occlusion"] = dest / "ecg_occlusion.parquet"
    paths["ecg_occlusion_png"] = dest / "ecg_occlusion.png"
    occlusion_frame.write_parquet(paths["ecg_occlusion"])
    paths["ecg_waves"] = dest / "ecg_waves.parquet"
    paths["ecg_waves_png"] = dest / "ecg_waves.png"
    (pl.concat(waves) if waves else pl.DataFrame()).write_parquet(paths["ecg_waves"])
    echo_frame = pl.DataFrame(echo_rows, schema=echo_schema, orient="row")
    paths["ecg"] = dest / "ecg_gradcam.parquet"
    paths["ecg_png"] = dest / "ecg_gradcam.png"
    paths["echo"] = dest / "echo_gradcam.parquet"
    paths["echo_png"] = dest / "echo_gradcam.png"
    ecg_frame.write_parquet(paths["ecg"])
    echo_frame.write_parquet(paths["echo"])
    if tokens:
        text_figure(token_frame, paths["text_png"])
        ecg_figure(ecg_frame, signals, paths["ecg_png"])
        occlusion_figure(occlusion_frame, signals, paths["ecg_occlusion_png"])
        waves_figure(pl.concat(waves), paths["ecg_waves_png"])
        echo_figure(echo_frame, paths["echo_png"])
    else:  # no test patient with all three modalities: the figures say so
        for key in ("text_png", "ecg_png", "ecg_occlusion_png", "ecg_waves_png", "echo_png"):
            empty_figure(paths[key])
    log.info("explanations: %d tasks, %d patients", len(work_dirs), ecg_frame["subject_id"].n_unique())
    return paths
