"""(b) Lab-text explanations (Fig. 9): integrated-gradient token attributions and sentence occlusion
(models/explain/__init__.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor

from models.explain.trained_run import ExplainedRun, fused_score, raw_batch, raw_lab, raw_vectors

# --------------------------------------------------------------------------- (b) lab-text tokens


def _sentence_of_tokens(tokenizer, text: str) -> tuple[list[int], list[int], list[str]]:
    """(token ids with [CLS]/[SEP], sentence index per token (-1 for special tokens), sentence labels).

    Sentences are "<name> of the <object> is <value>" joined by ". " (:mod:`hftri_mimic.dataset.text`); BERT's basic
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
    fixed = raw_vectors(model, raw_batch(run, out, subjects))

    def forward(input_ids: Tensor, attention_mask: Tensor, ecg: Tensor, echo: Tensor) -> Tensor:
        raw = {"lab": raw_lab(model, input_ids, attention_mask), "ecg": ecg, "echo": echo}
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
        fixed = raw_vectors(model, raw_batch(run, out, subjects))

    def forward(input_ids: Tensor, ecg: Tensor, echo: Tensor) -> Tensor:
        return fused_score(
            run, {"lab": raw_lab(model, input_ids, torch.ones_like(input_ids)), "ecg": ecg, "echo": echo}
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
