"""Do the explanations find the planted signal? (issue #8; demo source only.)

The demo generator plants the heart-failure signal in known places, and this module measures whether the
explanations of a trained trimodal run put more attribution there than elsewhere, against controls: the same
architecture, frozen encoders and feature statistics with the projections and TGMM left at their random
initialisation (untrained), one per seed. An untrained model already attributes more to large deflections and long
sentences; the trained one must beat every control, not 1.

- ECG (:func:`models.explain.ecg_wave_occlusion`): each record's QRS width and T-wave amplitude follow the
  patient's ECG component (:mod:`hftri_mimic.demo.records`); the P wave's shape does not (only the number of beats,
  through a heart rate 4 bpm higher per SD of the component). Measure: mean |score change| when the QRS complexes
  or the T waves are erased ÷ the same for the P waves, over the patients with all three waves delineated.
- Lab text (:func:`models.explain.sentence_occlusion`): the labs with a lab-component weight of at least
  :data:`PLANTED_WEIGHT` in :data:`hftri_mimic.demo.vocab.LAB_ITEMS` (NT-proBNP, creatinine, urea nitrogen,
  sodium, haemoglobin, ...) and the medical and drug history (drawn more often with heart failure,
  :mod:`hftri_mimic.demo.hosp`) are planted; the labs with weight 0 and the demographic sentences (gender, race,
  height, weight, BMI) are not; the rest (weak weights, age) count on neither side. Measure: per patient, mean
  |attribution| of the planted sentences ÷ mean |attribution| of the unplanted ones; geometric mean over the
  patients. ``lab_values`` is the same over the lab sentences alone (one template, similar lengths), so that the
  long history sentences cannot carry it.

An explanation can only find what the model learned: on the default demo the lab text alone has prognosis
C-index 0.48 (nothing learned), so the lab-text check is of the diagnosis model (models/README.md).

``python -m hftri_mimic.tools.planted_check RUN_DIR`` (a demo run folder holding config.yaml and the results of ``all``)
prints one JSON line per task and model. Only aggregates are printed; nothing is written.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from hftri_mimic.demo.ecg import qrs_t_windows
from hftri_mimic.demo.generate import ecg_record_rng
from hftri_mimic.demo.vocab import LAB_ITEMS
from models.explain import (
    TRIMODAL,
    ExplainedRun,
    choose_patients,
    ecg_wave_occlusion,
    load_run,
    raw_batch,
    raw_vectors,
    sentence_occlusion,
)
from models.training.configuration import ModelConfig
from models.training.factory import build_model

PLANTED_WEIGHT = 0.3  # a lab is planted when the lab component shifts it by at least this many SDs
PLANTED_WAVES = ("QRS", "T")
UNPLANTED_WAVES = ("P",)
# Sentence labels are the text before " of the " (hftri_mimic.dataset.text.patient_sentences).
HISTORY_SENTENCES = ("Medical history", "Drug history")
DEMOGRAPHIC_SENTENCES = ("Gender", "Race", "Height", "Weight", "BMI")


def planted_sentences(labs_only: bool = False) -> tuple[set[str], set[str]]:
    """(planted, unplanted) lab-text sentence labels of the demo (see the module docstring). ``labs_only``: only the
    lab sentences (one template, similar lengths), without the history and demographic sentences."""
    weights = {label: weight for label, *_, weight in LAB_ITEMS.values()}
    planted = {label for label, weight in weights.items() if abs(weight) >= PLANTED_WEIGHT}
    unplanted = {label for label, weight in weights.items() if weight == 0}
    if labs_only:
        return planted, unplanted
    return planted | set(HISTORY_SENTENCES), unplanted | set(DEMOGRAPHIC_SENTENCES)


def sentence_ratio(sentences: pl.DataFrame, labs_only: bool = False) -> tuple[float, int]:
    """Geometric mean over patients of mean |attribution| of planted ÷ unplanted sentences, and the number of
    patients with both kinds (``sentences``: :func:`models.explain.sentence_occlusion`'s frame)."""
    planted, unplanted = planted_sentences(labs_only)
    kind = (
        pl.when(pl.col("sentence_label").is_in(list(planted)))
        .then(pl.lit("planted"))
        .when(pl.col("sentence_label").is_in(list(unplanted)))
        .then(pl.lit("unplanted"))
    )
    per_patient = (
        sentences.with_columns(kind=kind, size=pl.col("attribution").abs())
        .drop_nulls("kind")
        .group_by("subject_id", "kind")
        .agg(pl.col("size").mean())
        .pivot(on="kind", index="subject_id", values="size")
    )
    if not {"planted", "unplanted"} <= set(per_patient.columns):
        return float("nan"), 0
    ratios = (per_patient["planted"] / per_patient["unplanted"]).to_numpy()
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    return (float(np.exp(np.log(ratios).mean())) if ratios.size else float("nan")), int(ratios.size)


def wave_ratio(waves: pl.DataFrame) -> tuple[float, int]:
    """Mean over the planted waves (QRS, T) of the patients' mean |score change| when that wave is erased, ÷ the same
    for the unplanted P wave, over the patients with all three waves delineated, and their number (``waves``:
    :func:`models.explain.ecg_wave_occlusion`'s frame)."""
    complete = (
        waves.group_by("subject_id")
        .agg(pl.col("attribution").is_finite().all() & (pl.len() == len(PLANTED_WAVES + UNPLANTED_WAVES)))
        .filter(pl.col("attribution"))["subject_id"]
    )
    if not complete.len():
        return float("nan"), 0
    kept = waves.filter(pl.col("subject_id").is_in(complete.implode()))
    mean = dict(kept.group_by("wave").agg(pl.col("attribution").abs().mean()).iter_rows())
    inside = np.mean([mean[w] for w in PLANTED_WAVES])
    outside = np.mean([mean[w] for w in UNPLANTED_WAVES])
    return (float(inside / outside) if outside > 0 else float("nan")), int(complete.len())


def planted_ecg_masks(out_dir: str | Path, subject_ids: Sequence[int], n_samples: int) -> list[np.ndarray]:
    """(n_samples,) bool per patient: the samples of the stored ECG from a QRS onset to the T end of its beat, from
    the demo's source truth (``source_truth/ecg_records.parquet``) and the record's replayed beat times."""
    out = Path(out_dir)
    config = yaml.safe_load((out.parent / "config.yaml").read_text())
    seed, fs = config["demo"]["seed"], config["ecg"]["target_fs"]  # the stored records' rate
    studies = pl.read_parquet(out / "hftri/manifest.parquet", columns=["subject_id", "ecg_study_id"])
    truth = pl.read_parquet(out / "source_truth/ecg_records.parquet", columns=["study_id", "qrs_ms", "hr"])
    study_of = dict(studies.iter_rows())
    masks = []
    for subject in subject_ids:
        study = study_of[subject]
        record = truth.filter(study_id=study).row(0, named=True)
        windows = qrs_t_windows(ecg_record_rng(seed, study), qrs_ms=record["qrs_ms"], hr_bpm=record["hr"])
        inside = np.zeros(n_samples, dtype=bool)
        for start, end in windows * fs / 1000:
            inside[int(np.floor(start)) : int(np.ceil(end))] = True
        masks.append(inside)
    return masks


def untrained_run(trained: ExplainedRun, model_settings: dict, seed: int) -> ExplainedRun:
    """The control: ``trained``'s architecture, frozen encoders and feature statistics, with the projections and
    TGMM at their random initialisation from ``seed``."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig.from_dict(model_settings)).eval()
    return ExplainedRun(trained.task, model, trained.stats, trained.test_ids, trained.path)


def run_settings(run_dir: str | Path) -> dict:
    """The model settings of a workflow run folder, as the workflow passes them (demo vocabulary included)."""
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    out = run_dir / config.get("out_dir", "results")
    settings = config["model"]
    settings["text"]["vocab"] = str(out / "text/tokenizer")
    return settings


def planted_measures(
    run_dir: str | Path,
    task: str,
    *,
    seeds: Sequence[int] = tuple(range(10)),
    per_class: int = 1000,
    train_dir: str = "train",
    measures: Sequence[str] = ("ecg", "text"),
) -> list[dict[str, Any]]:
    """The measures (``"ecg"``: :func:`wave_ratio`, ``"text"``: :func:`sentence_ratio`) of the trimodal ``task`` run
    of a demo workflow folder and of one untrained control per seed, on up to ``per_class`` test patients of each
    class with all three modalities (the same patients for every model). The first row is the trained run."""
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    out = run_dir / config.get("out_dir", "results")
    settings = run_settings(run_dir)
    fs = int(config["ecg"]["target_fs"])
    trained = load_run(out, settings, out / train_dir / task / TRIMODAL, task)
    patients = choose_patients(trained, out, per_class)
    batch = raw_batch(trained, out, patients["subject_id"].to_list())
    fixed = raw_vectors(trained.model, batch)  # frozen encoders: the same vectors for every control
    runs = [("trained", trained)] + [(f"untrained{s}", untrained_run(trained, settings, s)) for s in seeds]
    rows = []
    for name, run in runs:
        row: dict[str, Any] = {"task": task, "train_dir": train_dir, "model": name, "n": patients.height}
        if "ecg" in measures:
            waves = ecg_wave_occlusion(run, out, patients, fs=fs, batch=batch, fixed=fixed)
            row["ecg_waves"], row["n_ecg"] = wave_ratio(waves)
        if "text" in measures:
            sentences = sentence_occlusion(run, out, patients, fixed=fixed)
            row["lab_text"], row["n_text"] = sentence_ratio(sentences)
            row["lab_values"], row["n_values"] = sentence_ratio(sentences, labs_only=True)
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tasks", nargs="+", default=["diagnosis", "prognosis"])
    parser.add_argument("--seeds", nargs="*", type=int, default=list(range(10)), help="untrained control seeds")
    parser.add_argument("--per-class", type=int, default=1000, help="test patients per class (all three modalities)")
    parser.add_argument("--train-dir", default="train", help="under out_dir: train, or train/seeds/seed<k> (seeds)")
    args = parser.parse_args(argv)
    for task in args.tasks:
        rows = planted_measures(
            args.run_dir, task, seeds=args.seeds, per_class=args.per_class, train_dir=args.train_dir
        )
        for row in rows:
            print(json.dumps({"run": str(args.run_dir), **row}), flush=True)


if __name__ == "__main__":
    main()
