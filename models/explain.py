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
run on raw data the way :mod:`models.features` encoded it.  An ensemble run is explained by its first member.

Figures and the HTML page number the patients 1, 2, ... in the order of the parquet files (which carry the
subject ids) rather than printing identifiers.

Grad-CAM++ maps are kept un-normalised (ReLU of the weighted activations, no per-image min-max scaling as
``GradCAMPlusPlus.__call__`` would do), so leads, views, crops and patients stay comparable; figures normalise per
patient.  The ECG encoder averages three overlapping 2250-sample crops (starts 0, 125, 250): each crop's map is
laid on the record's 2500 samples (a patch token covers its 75 samples) and overlapping crops are averaged.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from models.config import MODALITIES, SLOTS
from models.configuration import ModelConfig
from models.data import HFTriDataset, make_loader
from models.experiment import Experiment, prognosis_folds, split_subjects
from models.factory import build_model
from models.features import FeatureStats
from models.multimodal import MultimodalTGMM
from models.tgmm import TGMMOutput
from models.train import forward_batch, load_checkpoint

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
    "load_run",
    "run_dir",
    "sentence_occlusion",
    "text_attributions",
]

TRIMODAL = "lab+ecg+echo"
CLASS_COLUMN = {"diagnosis": "label", "prognosis": "event"}


# --------------------------------------------------------------------------- the trained run


@dataclass
class ExplainedRun:
    """A trained trimodal run ready for explanation: ``model`` (eval mode, encoders included), the training split's
    feature statistics (``None`` when the run trained on raw data) and the patients it was tested on."""

    task: str
    model: MultimodalTGMM
    stats: FeatureStats | None
    test_ids: list[int]
    path: Path


def run_dir(work_dir: str | Path, task: str, splits: pl.DataFrame) -> Path:
    """Where ``models.experiment`` keeps the first member of the trimodal run: diagnosis ``run/``, prognosis the
    first (repeat, fold)."""
    if task == "diagnosis":
        return Path(work_dir) / "run"
    repeat, fold = prognosis_folds(splits)[0]
    return Path(work_dir) / f"repeat{repeat}_fold{fold}"


def load_run(out_dir: str | Path, model_settings: Mapping[str, Any], work_dir: str | Path, task: str) -> ExplainedRun:
    """The run's ``best.pt`` loaded into a full :class:`MultimodalTGMM` (frozen encoders rebuilt from their
    checkpoints / ``encoder_seed``; the checkpoint's digest of them is checked) with its ``feature_stats.pt``."""
    splits = pl.read_parquet(Path(out_dir) / "hftri/splits.parquet")
    path = run_dir(work_dir, task, splits)
    model = build_model(ModelConfig.from_dict(model_settings))
    load_checkpoint(model, path / "best.pt")
    model.eval()
    stats_path = path / "feature_stats.pt"
    stats = torch.load(stats_path, weights_only=True) if stats_path.is_file() else None
    if task == "diagnosis":
        test_ids = split_subjects(splits, "diagnosis", "test")
    else:
        repeat, fold = prognosis_folds(splits)[0]
        test_ids = split_subjects(splits, "prognosis", "test", repeat, fold)
    return ExplainedRun(task=task, model=model, stats=stats, test_ids=test_ids, path=path)


def task_score(outputs: TGMMOutput, task: str) -> Tensor:
    """(B,) the explained score: log-odds of "heart failure" (diagnosis) or the risk ŷ (prognosis)."""
    if task == "prognosis":
        return outputs.risk.reshape(-1)
    loglik = outputs.loglik
    others = torch.cat([loglik[:, :1], loglik[:, 2:]], dim=1)
    return loglik[:, 1] - torch.logsumexp(others, dim=1)


def _standardise(x: Tensor, stats: FeatureStats | None, name: str) -> Tensor:
    if stats is None:
        return x
    mean, std = stats[name]
    return (x - mean.to(x.device)) / std.to(x.device)


def fused_score(run: ExplainedRun, raw: Mapping[str, Tensor]) -> Tensor:
    """Pre-projection encoder vectors ``raw`` (lab (B, H), ecg (B, W), echo (B, 512); all present) -> (B,) score,
    as the cached-feature path computes it (standardise, project, TGMM)."""
    model = run.model
    projections = {"lab": model.text.proj, "ecg": model.ecg.proj, "echo": model.echo.proj}
    features = torch.stack([projections[m](_standardise(raw[m], run.stats, m)) for m in MODALITIES], dim=1)
    present = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
    return task_score(model.tgmm(features, present, run.task), run.task)


def _raw_lab(model: MultimodalTGMM, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    hidden = model.text.hidden_states(input_ids, attention_mask)
    return hidden[:, 0] if model.text.pooling == "cls" else model.text.mean_pool(hidden, attention_mask)


def _raw_ecg(model: MultimodalTGMM, ecg: Tensor) -> Tensor:
    crops = model.ecg.transform(ecg, training=False)  # (B, K, 12, 2250)
    b, k = crops.shape[:2]
    return model.ecg.vit(crops.flatten(0, 1)).reshape(b, k, -1).mean(dim=1)


def _raw_echo(model: MultimodalTGMM, clips: Tensor, view_present: Tensor) -> Tensor:
    encoded = model.echo(clips, view_present)
    count = view_present.bool().sum(1).clamp_min(1).unsqueeze(1).to(encoded.views.dtype)
    return encoded.views.sum(1) / count


@torch.no_grad()
def raw_vectors(model: MultimodalTGMM, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Pre-projection vectors of a raw batch (see :func:`models.features.encode_batch`), without gradients."""
    return {
        "lab": _raw_lab(model, batch["input_ids"], batch["attention_mask"]),
        "ecg": _raw_ecg(model, batch["ecg"]),
        "echo": _raw_echo(model, batch["echo"], batch["view_present"]),
    }


# --------------------------------------------------------------------------- patients


def choose_patients(run: ExplainedRun, out_dir: str | Path, per_class: int) -> pl.DataFrame:
    """Up to ``per_class`` of the run's test patients of each class that have lab text, an ECG and an echo study
    with a view, in subject order. Returns subject_id, label (the task's class: prevalent / incident HF)."""
    data = HFTriDataset(out_dir, run.test_ids, tokenizer=run.model.text.tokenizer, train=False, seed=0)
    column = data.label if run.task == "diagnosis" else data.event
    frame = pl.DataFrame({"subject_id": data.subject_ids, "label": np.asarray(column, dtype=np.int64)})
    frame = frame.filter(pl.Series(data.present.all(1)) & (pl.col("label") >= 0))
    chosen = frame.group_by("label", maintain_order=True).head(per_class)
    return chosen.select("subject_id", "label").sort("label", "subject_id")


def _raw_batch(run: ExplainedRun, out_dir: Path, subjects: Sequence[int]) -> dict[str, Tensor]:
    data = HFTriDataset(
        out_dir,
        list(subjects),
        tokenizer=run.model.text.tokenizer,
        max_tokens=run.model.text.max_length,
        train=False,
        seed=0,
    )
    return data.collate_fn([data[i] for i in range(len(data))])


# --------------------------------------------------------------------------- (a) attention matrices, Fig. 8


@torch.no_grad()
def attention_by_class(run: ExplainedRun, experiment: Experiment, *, batch_size: int = 256) -> pl.DataFrame:
    """Mean TGM and MFFM attention over the run's test patients with all three modalities, per class.

    Returns a long frame: task, label (class), module ("tgm": query slot x key = slot or "prompt" (the P prompt
    tokens summed); "mffm": query modality x key modality of shared slot ``slot``), slot, query, key, weight,
    n (patients averaged).
    """
    data = experiment.data(run.test_ids, TRIMODAL, train=False, stats=run.stats)
    parts: dict[str, list[Tensor]] = {"present": [], "label": [], "tgm": [], "mffm": []}
    for batch in make_loader(data, batch_size, shuffle=False, seed=0):
        outputs = forward_batch(run.model, batch, TRIMODAL, run.task)
        parts["present"].append(batch["present"].bool().all(1))
        parts["label"].append(batch[CLASS_COLUMN[run.task]].long())
        tgm = outputs.attention["tgm"]  # (B, 7, 7 + P): the P prompt tokens summed into one key
        parts["tgm"].append(torch.cat([tgm[:, :, : len(SLOTS)], tgm[:, :, len(SLOTS) :].sum(-1, keepdim=True)], -1))
        parts["mffm"].append(outputs.attention["mffm"])  # (B, 4, 3, 3)
    present, labels, tgm, mffm = (torch.cat(parts[k]) for k in ("present", "label", "tgm", "mffm"))
    shared = [s for s in SLOTS if "+" in s]
    rows = []
    for label in sorted(int(v) for v in labels[present].unique()):
        chosen = present & (labels == label)
        n = int(chosen.sum())
        mean_tgm = tgm[chosen].mean(0)
        for i, query in enumerate(SLOTS):
            for j, key in enumerate([*SLOTS, "prompt"]):
                rows.append((run.task, label, "tgm", "all", query, key, float(mean_tgm[i, j]), n))
        mean_mffm = mffm[chosen].mean(0)
        for s, slot in enumerate(shared):
            for i, query in enumerate(MODALITIES):
                for j, key in enumerate(MODALITIES):
                    rows.append((run.task, label, "mffm", slot, query, key, float(mean_mffm[s, i, j]), n))
    schema = {
        "task": pl.String, "label": pl.Int64, "module": pl.String, "slot": pl.String, "query": pl.String,
        "key": pl.String, "weight": pl.Float64, "n": pl.Int64,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")


# --------------------------------------------------------------------------- (b) lab-text tokens


def _sentence_of_tokens(tokenizer, text: str) -> tuple[list[int], list[int], list[str]]:
    """(token ids with [CLS]/[SEP], sentence index per token (-1 for special tokens), sentence labels).

    Sentences are "<name> of the <object> is <value>" joined by ". " (:mod:`hftri_mimic.text`); BERT's basic
    tokenizer splits at every punctuation mark, so tokenising sentence by sentence gives the text's tokens."""
    sentences = text.rstrip(".").split(". ") if text else []
    ids = [tokenizer.cls_token_id]
    index = [-1]
    for k, sentence in enumerate(sentences):
        part = tokenizer(sentence + ".", add_special_tokens=False)["input_ids"]
        ids += part
        index += [k] * len(part)
    ids.append(tokenizer.sep_token_id)
    index.append(-1)
    whole = tokenizer(text, add_special_tokens=True)["input_ids"]
    if whole != ids:  # another tokenizer: keep its tokens, sentences unknown
        return whole, [-1] * len(whole), [s.split(" of the ")[0] for s in sentences]
    return ids, index, [s.split(" of the ")[0] for s in sentences]


def text_attributions(
    run: ExplainedRun, out_dir: str | Path, patients: pl.DataFrame, *, n_steps: int = 32
) -> pl.DataFrame:
    """Integrated-gradients attribution of every lab-text token of ``patients`` (subject_id, label).

    ECG and echo enter through their fixed (no-gradient) encoder vectors. Returns task, subject_id, label, score,
    position, token, sentence (index, -1 for [CLS]/[SEP]), sentence_label (e.g. "NTproBNP"), attribution
    (sum over the embedding width of Captum's ``LayerIntegratedGradients`` on ``bert.embeddings``), delta
    (Captum's completeness error for the patient: sum of attributions - (score - baseline score)).
    """
    from captum.attr import LayerIntegratedGradients

    out = Path(out_dir)
    model = run.model
    tokenizer = model.text.tokenizer
    texts = dict(pl.read_parquet(out / "hftri/text.parquet", columns=["subject_id", "text"]).iter_rows())
    subjects = patients["subject_id"].to_list()
    fixed = raw_vectors(model, _raw_batch(run, out, subjects))

    def forward(input_ids: Tensor, attention_mask: Tensor, ecg: Tensor, echo: Tensor) -> Tensor:
        raw = {"lab": _raw_lab(model, input_ids, attention_mask), "ecg": ecg, "echo": echo}
        return fused_score(run, raw)

    explainer = LayerIntegratedGradients(forward, model.text.bert.embeddings)
    frames = []
    for row, subject in enumerate(subjects):
        ids, sentence, labels = _sentence_of_tokens(tokenizer, texts[subject])
        input_ids = torch.tensor([ids])
        mask = torch.ones_like(input_ids)
        special = torch.tensor([[i in (tokenizer.cls_token_id, tokenizer.sep_token_id) for i in ids]])
        baseline = torch.where(special, input_ids, torch.full_like(input_ids, tokenizer.pad_token_id))
        extra = (mask, fixed["ecg"][row : row + 1], fixed["echo"][row : row + 1])
        attributions, delta = explainer.attribute(
            input_ids, baselines=baseline, additional_forward_args=extra, n_steps=n_steps,
            return_convergence_delta=True,
        )  # fmt: skip
        with torch.no_grad():
            score = float(forward(input_ids, mask, *extra[1:])[0])
        values = attributions.sum(-1)[0].detach().numpy()
        frames.append(
            pl.DataFrame(
                {
                    "task": run.task,
                    "subject_id": subject,
                    "label": int(patients["label"][row]),
                    "score": score,
                    "position": np.arange(len(ids)),
                    "token": tokenizer.convert_ids_to_tokens(ids),
                    "sentence": np.asarray(sentence, dtype=np.int64),
                    "sentence_label": [labels[k] if k >= 0 else "" for k in sentence],
                    "attribution": values.astype(np.float64),
                    "delta": float(delta[0]),
                }
            )
        )
    return pl.concat(frames).with_columns(pl.col("subject_id", "label").cast(pl.Int64))


@torch.no_grad()
def sentence_occlusion(
    run: ExplainedRun, out_dir: str | Path, patients: pl.DataFrame, *, fixed: Mapping[str, Tensor] | None = None
) -> pl.DataFrame:
    """Sentence occlusion of the lab text of ``patients`` (subject_id, label): Captum's ``FeatureAblation`` with one
    feature group per sentence, ablated by replacing every token of the sentence with ``[MASK]`` ([CLS]/[SEP] and
    the other sentences untouched); a sentence's attribution is score(text) - score(text with it masked), i.e.
    positive when the sentence pushes towards the positive answer. ECG and echo enter through their fixed encoder
    vectors.

    Masking keeps every other token at its position. Removing the sentence instead (the first version) moves every
    later token, so the first sentences (age, gender, height: no heart-failure signal) drew attribution for shifting
    the whole text: with a randomly initialised BERT their removal changed the score as much as the drug history's.

    ``fixed``: the patients' encoder vectors (:func:`raw_vectors` of their batch) when already computed.
    Returns task, subject_id, label, score, sentence (index), sentence_label (e.g. "NTproBNP"), attribution.
    """
    from captum.attr import FeatureAblation

    out = Path(out_dir)
    model = run.model
    tokenizer = model.text.tokenizer
    texts = dict(pl.read_parquet(out / "hftri/text.parquet", columns=["subject_id", "text"]).iter_rows())
    subjects = patients["subject_id"].to_list()
    if fixed is None:
        fixed = raw_vectors(model, _raw_batch(run, out, subjects))

    def forward(input_ids: Tensor, ecg: Tensor, echo: Tensor) -> Tensor:
        return fused_score(
            run, {"lab": _raw_lab(model, input_ids, torch.ones_like(input_ids)), "ecg": ecg, "echo": echo}
        )

    explainer = FeatureAblation(forward)
    rows = []
    for row, subject in enumerate(subjects):
        ids, sentence, labels = _sentence_of_tokens(tokenizer, texts[subject])
        if not labels or max(sentence) < 0:
            continue
        input_ids = torch.tensor([ids])
        groups = torch.tensor([sentence]) + 1  # group 0: [CLS]/[SEP], not ablated (its baseline is itself)
        baseline = torch.where(groups == 0, input_ids, torch.full_like(input_ids, tokenizer.mask_token_id))
        extra = (fixed["ecg"][row : row + 1], fixed["echo"][row : row + 1])
        values = explainer.attribute(
            input_ids, baselines=baseline, additional_forward_args=extra, feature_mask=groups,
            perturbations_per_eval=16,
        )[0]  # fmt: skip
        score = float(forward(input_ids, *extra)[0])
        for k, label in enumerate(labels):
            rows.append(
                (run.task, subject, int(patients["label"][row]), score, k, label, float(values[sentence.index(k)]))
            )
    schema = {
        "task": pl.String, "subject_id": pl.Int64, "label": pl.Int64, "score": pl.Float64, "sentence": pl.Int64,
        "sentence_label": pl.String, "attribution": pl.Float64,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")


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
        batch = _raw_batch(run, Path(out_dir), patients["subject_id"].to_list())
    if fixed is None:
        fixed = raw_vectors(model, batch)
    ecg = batch["ecg"]

    def forward(x: Tensor, lab: Tensor, echo: Tensor) -> Tensor:
        return fused_score(run, {"lab": lab, "ecg": _raw_ecg(model, x), "echo": echo})

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
    from hftri_mimic.ecg import _neurokit2

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
        batch = _raw_batch(run, Path(out_dir), patients["subject_id"].to_list())
    if fixed is None:
        fixed = raw_vectors(model, batch)
    records = batch["ecg"].numpy()

    def score(ecg: np.ndarray) -> np.ndarray:
        raw = {"lab": fixed["lab"], "ecg": _raw_ecg(model, torch.as_tensor(ecg)), "echo": fixed["echo"]}
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


# --------------------------------------------------------------------------- (d) Grad-CAM++


def _gradcam_plusplus_maps(model: nn.Module, layer: nn.Module, reshape, inputs: Tensor) -> np.ndarray:
    """Un-normalised Grad-CAM++ maps of ``model``'s summed (B,) scores w.r.t. ``layer``: ReLU(Σ_k w_k A_k) with
    pytorch-grad-cam's hooks and ``GradCAMPlusPlus`` weights. ``reshape`` turns the layer output into (N, C, ...)."""
    from pytorch_grad_cam import GradCAMPlusPlus

    cam = GradCAMPlusPlus(model=model, target_layers=[layer], reshape_transform=reshape)
    try:
        score = cam.activations_and_grads(inputs.requires_grad_(True))
        model.zero_grad()
        score.sum().backward()
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        maps = cam.get_cam_image(inputs, layer, None, activations, grads)
    finally:
        cam.activations_and_grads.release()
    return np.maximum(maps, 0.0)


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
    batch = _raw_batch(run, Path(out_dir), patients["subject_id"].to_list())
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
    maps = _gradcam_plusplus_maps(wrapper, layer, reshape, crops.flatten(0, 1).clone())  # (N·K, 12, n)
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


class _EchoViews(nn.Module):
    """(V, 3, F, H, W) one patient's preprocessed present views -> (1,) score with lab and ECG vectors fixed."""

    def __init__(self, run: ExplainedRun, lab: Tensor, ecg: Tensor) -> None:
        super().__init__()
        self.run, self.lab, self.ecg = run, lab, ecg
        self.video = run.model.echo.video

    def forward(self, x: Tensor) -> Tensor:
        echo = self.video(x).mean(dim=0, keepdim=True)
        return fused_score(self.run, {"lab": self.lab, "ecg": self.ecg, "echo": echo})


def echo_gradcam(run: ExplainedRun, out_dir: str | Path, patients: pl.DataFrame) -> np.ndarray:
    """Grad-CAM++ over echo views x frames for ``patients``: (N, 11, F) float32, the map summed over each frame's
    pixels (a temporal token covers F / T' frames), zeros for absent views; EchoPrime's view order."""
    model = run.model
    batch = _raw_batch(run, Path(out_dir), patients["subject_id"].to_list())
    fixed = raw_vectors(model, batch)
    video = model.echo.video
    block = video.blocks[-1]
    grid: dict[str, Any] = {}
    handle = block.register_forward_pre_hook(lambda _module, args: grid.__setitem__("thw", args[1]))

    def reshape(tokens: Tensor) -> Tensor:  # (V, 1 + T·H·W, C) -> (V, C, T, H, W), class token dropped
        t, h, w = grid["thw"]
        return tokens[:, 1:].reshape(tokens.shape[0], t, h, w, -1).permute(0, 4, 1, 2, 3)

    n, views, frames = batch["echo"].shape[:3]
    out = np.zeros((n, views, frames), dtype=np.float32)
    try:
        for i in range(n):
            present = batch["view_present"][i].bool()
            x = model.echo.preprocess(batch["echo"][i][present])  # (V, 3, F, H, W)
            wrapper = _EchoViews(run, fixed["lab"][i : i + 1], fixed["ecg"][i : i + 1])
            maps = _gradcam_plusplus_maps(wrapper, block.norm1, reshape, x.clone())  # (V, T, H, W)
            per_token = maps.sum(axis=(2, 3))  # (V, T)
            per_frame = np.repeat(per_token, frames // per_token.shape[1], axis=1) / (frames // per_token.shape[1])
            out[i, present.numpy()] = per_frame
    finally:
        handle.remove()
    return out


# --------------------------------------------------------------------------- figures and files


def _attention_figure(frame: pl.DataFrame, task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = frame.filter(task=task)
    labels = sorted(part["label"].unique().to_list())
    shared = [s for s in SLOTS if "+" in s]
    fig, axes = plt.subplots(len(labels), 1 + len(shared), figsize=(16, 3.6 * len(labels)), squeeze=False,
                             gridspec_kw={"width_ratios": [2.4] + [1] * len(shared)})  # fmt: skip
    names = {"diagnosis": ("no prevalent HF", "prevalent HF"), "prognosis": ("no incident HF", "incident HF")}[task]
    for r, label in enumerate(labels):
        tgm = part.filter(label=label, module="tgm")
        keys = [*SLOTS, "prompt"]
        matrix = np.array([[tgm.filter(query=q, key=k)["weight"][0] for k in keys] for q in SLOTS])
        ax = axes[r, 0]
        ax.imshow(matrix, cmap="Reds", vmin=0)
        ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right")
        ax.set_yticks(range(len(SLOTS)), SLOTS)
        ax.set_title(f"TGM, {names[label]} (n={tgm['n'][0]})")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        for c, slot in enumerate(shared, start=1):
            m = part.filter(label=label, module="mffm", slot=slot)
            matrix = np.array([[m.filter(query=q, key=k)["weight"][0] for k in MODALITIES] for q in MODALITIES])
            ax = axes[r, c]
            ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(3), MODALITIES)
            ax.set_yticks(range(3), MODALITIES)
            ax.set_title(f"MFFM {slot}")
            for (i, j), v in np.ndenumerate(matrix):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.suptitle(f"Attention over specific and shared features (trimodal {task}; t = lab, s = ECG, m = echo)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _colour(value: float, scale: float) -> str:
    alpha = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    rgb = "220,40,40" if value > 0 else "40,90,220"
    return f"rgba({rgb},{alpha:.3f})"


def text_html(tokens: pl.DataFrame) -> str:
    """An HTML page: every patient's lab text as WordPiece tokens on a red (towards the positive answer) / blue
    (away from it) background, intensity ∝ |attribution| / the patient's largest |attribution|."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Lab-text token attributions</title>",
        "<style>body{font-family:sans-serif;max-width:1100px}span.t{padding:1px 2px;margin:0 1px;"
        "border-radius:3px;line-height:1.9}</style></head><body>",
        "<h1>Lab-text token attributions (integrated gradients)</h1>",
        "<p>Red: pushes towards the positive answer (heart failure / high risk); blue: away from it.</p>",
    ]
    for k, ((task, _), part) in enumerate(tokens.group_by(["task", "subject_id"], maintain_order=True), start=1):
        scale = float(part["attribution"].abs().max())
        label, score = int(part["label"][0]), float(part["score"][0])
        parts.append(f"<h2>{html.escape(task)}: patient {k} (class {label}, score {score:.3f})</h2><p>")
        for token, value in zip(part["token"], part["attribution"], strict=True):
            text = html.escape(token[2:] if token.startswith("##") else token)
            parts.append(
                f"<span class='t' title='{value:.4g}' style='background:{_colour(value, scale)}'>{text}</span>"
            )
        parts.append("</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _text_figure(tokens: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(tokens.filter(pl.col("sentence") >= 0).group_by(["task", "subject_id"], maintain_order=True))
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 3.2 * max(len(groups), 1)), squeeze=False)
    for k, (ax, ((task, _), part)) in enumerate(zip(axes[:, 0], groups, strict=True), start=1):
        sentences = part.group_by("sentence", maintain_order=True).agg(
            pl.col("sentence_label").first(), pl.col("attribution").sum()
        )
        values = sentences["attribution"].to_numpy()
        ax.barh(range(len(values)), values, color=np.where(values > 0, "tab:red", "tab:blue"))
        ax.set_yticks(range(len(values)), sentences["sentence_label"].to_list(), fontsize=6)
        ax.invert_yaxis()
        ax.set_title(f"{task}: patient {k} (class {part['label'][0]}), attribution per sentence", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ecg_figure(frame: pl.DataFrame, ecgs: Mapping[int, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hftri_mimic.ecg import ST_MEM_LEADS

    groups = list(frame.group_by(["task", "subject_id"], maintain_order=True))
    fig, axes = plt.subplots(len(groups), 1, figsize=(12, 4.2 * len(groups)), squeeze=False)
    for k, (ax, ((task, subject), part)) in enumerate(zip(axes[:, 0], groups, strict=True), start=1):
        cam = np.stack(part.sort("lead_index")["cam"].to_list())  # (12, T)
        cam = cam / max(float(cam.max()), 1e-12)
        signal = ecgs[subject]
        t = np.arange(signal.shape[1])
        ax.imshow(cam, aspect="auto", cmap="Reds", extent=(0, len(t), len(ST_MEM_LEADS), 0), vmin=0, vmax=1)
        for lead in range(len(ST_MEM_LEADS)):
            trace = signal[lead] / (np.abs(signal[lead]).max() + 1e-6)
            ax.plot(t, lead + 0.5 - 0.45 * trace, color="black", linewidth=0.4)
        ax.set_yticks(np.arange(len(ST_MEM_LEADS)) + 0.5, ST_MEM_LEADS, fontsize=7)
        ax.set_xlabel("sample (250 Hz)")
        ax.set_title(f"{task}: patient {k} (class {part['label'][0]}), ECG Grad-CAM++", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _occlusion_figure(frame: pl.DataFrame, ecgs: Mapping[int, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(frame.iter_rows(named=True))
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 2.2 * len(rows)), squeeze=False)
    for k, (ax, row) in enumerate(zip(axes[:, 0], rows, strict=True), start=1):
        values = np.asarray(row["attribution"], dtype=np.float64)
        signal = ecgs[row["subject_id"]][1]  # lead II
        t = np.arange(values.size)
        scale = max(float(np.abs(values).max()), 1e-12)
        ax.fill_between(t, 0, values / scale, where=values > 0, color="tab:red", alpha=0.5, linewidth=0)
        ax.fill_between(t, 0, values / scale, where=values < 0, color="tab:blue", alpha=0.5, linewidth=0)
        ax.plot(t, signal / (np.abs(signal).max() + 1e-6), color="black", linewidth=0.5)
        ax.set_xlim(0, values.size)
        ax.set_ylim(-1.05, 1.05)
        ax.set_yticks([])
        ax.set_title(
            f"{row['task']}: patient {k} (class {row['label']}, score {row['score']:.3f}), occlusion over time "
            f"(largest |attribution| {scale:.3g})",
            fontsize=8,
        )
    axes[-1, 0].set_xlabel("sample (250 Hz); black: lead II")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _waves_figure(frame: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = frame["task"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = frame.filter(task=task).drop_nans("attribution")
        for offset, (label, colour) in zip((-0.18, 0.18), ((0, "tab:blue"), (1, "tab:red")), strict=True):
            for k, wave in enumerate(WAVES):
                values = rows.filter(label=label, wave=wave)["attribution"].to_numpy()
                if values.size == 0:
                    continue
                ax.bar(k + offset, values.mean(), width=0.34, color=colour, alpha=0.45)
                ax.scatter(np.full(values.size, k + offset), values, s=10, color=colour)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(WAVES)), [f"{wave} erased" for wave in WAVES])
        ax.set_ylabel("score - score without the wave")
        ax.set_title(f"{task}: blue class 0, red class 1 (bar: mean, dots: patients)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _echo_figure(frame: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hftri_mimic.echo import VIEWS

    groups = list(frame.group_by(["task", "subject_id"], maintain_order=True))
    cols = min(len(groups), 4)
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    for k, (ax, ((task, _), part)) in enumerate(zip(axes.flat[: len(groups)], groups, strict=True), start=1):
        cam = np.stack(part.sort("view_index")["cam"].to_list())  # (11, F)
        ax.imshow(cam / max(float(cam.max()), 1e-12), aspect="auto", cmap="Reds", vmin=0, vmax=1)
        ax.set_yticks(range(len(VIEWS)), VIEWS, fontsize=6)
        ax.set_xlabel("frame")
        ax.set_title(f"{task} patient {k} (class {part['label'][0]})", fontsize=8)
    fig.suptitle("Echo Grad-CAM++ over views x frames")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _empty_figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(5, 1))
    fig.text(0.5, 0.5, "no test patient with lab text, ECG and echo", ha="center", va="center")
    fig.savefig(path, dpi=80)
    plt.close(fig)


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
    from hftri_mimic.ecg import ST_MEM_LEADS
    from hftri_mimic.echo import VIEWS

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
        batch = _raw_batch(run, out, chosen["subject_id"].to_list())
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
            _empty_figure(paths[f"attention_{task}"])
        else:
            _attention_figure(frame, task, paths[f"attention_{task}"])
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
        _text_figure(token_frame, paths["text_png"])
        _ecg_figure(ecg_frame, signals, paths["ecg_png"])
        _occlusion_figure(occlusion_frame, signals, paths["ecg_occlusion_png"])
        _waves_figure(pl.concat(waves), paths["ecg_waves_png"])
        _echo_figure(echo_frame, paths["echo_png"])
    else:  # no test patient with all three modalities: the figures say so
        for key in ("text_png", "ecg_png", "ecg_occlusion_png", "ecg_waves_png", "echo_png"):
            _empty_figure(paths[key])
    log.info("explanations: %d tasks, %d patients", len(work_dirs), ecg_frame["subject_id"].n_unique())
    return paths
