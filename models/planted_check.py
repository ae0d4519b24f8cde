"""Do the explanations find the planted signal? (issue #8; demo source only.)

The demo generator plants the heart-failure signal in known places: each ECG record's QRS width and T-wave
amplitude follow the patient's ECG component (:mod:`hftri_mimic.demo.records`), and NT-proBNP is the lab most
weighted by the lab component (:data:`hftri_mimic.demo.vocab.LAB_ITEMS`). This module measures whether the signed
occlusion explanations of a trained trimodal run (:func:`models.explain.ecg_occlusion`,
:func:`models.explain.sentence_occlusion`) put attribution towards each patient's own class there rather than
elsewhere (:func:`models.explain.class_contrast`), for the trained run and for controls: the same architecture
with the same frozen encoders and feature statistics but projections and TGMM left at their random
initialisation (untrained), one per seed.

- ECG: the planted region is QRS onset .. T end of every beat (:func:`hftri_mimic.demo.ecg.qrs_t_windows`,
  replayed from the record's seed), the rest of the 10 s is outside.
- Lab text: the NT-proBNP sentence against the patient's other sentences (patients whose text has one).

``python -m models.planted_check RUN_DIR`` (a demo run folder holding config.yaml and the results of ``all``)
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
from models.explain import (
    TRIMODAL,
    ExplainedRun,
    _raw_batch,
    choose_patients,
    class_contrast,
    ecg_occlusion,
    load_run,
    raw_vectors,
    sentence_occlusion,
)
from models.train import ModelConfig, build_model

ECG_FS = 250  # the dataset stage's ECG rate: record time t ms is sample t * 250 / 1000
PLANTED_LAB = "NTproBNP"


def planted_ecg_masks(out_dir: str | Path, subject_ids: Sequence[int], n_samples: int) -> list[np.ndarray]:
    """(n_samples,) bool per patient: the samples of the stored ECG from a QRS onset to the T end of its beat, from
    the demo's source truth (``source_truth/ecg_records.parquet``) and the record's replayed beat times."""
    out = Path(out_dir)
    seed = yaml.safe_load((out.parent / "config.yaml").read_text())["demo"]["seed"]
    studies = pl.read_parquet(out / "hftri/manifest.parquet", columns=["subject_id", "ecg_study_id"])
    truth = pl.read_parquet(out / "source_truth/ecg_records.parquet", columns=["study_id", "qrs_ms", "hr"])
    study_of = dict(studies.iter_rows())
    masks = []
    for subject in subject_ids:
        study = study_of[subject]
        record = truth.filter(study_id=study).row(0, named=True)
        windows = qrs_t_windows(ecg_record_rng(seed, study), qrs_ms=record["qrs_ms"], hr_bpm=record["hr"])
        inside = np.zeros(n_samples, dtype=bool)
        for start, end in windows * ECG_FS / 1000:
            inside[int(np.floor(start)) : int(np.ceil(end))] = True
        masks.append(inside)
    return masks


def planted_contrasts(
    run: ExplainedRun,
    out_dir: str | Path,
    patients: pl.DataFrame,
    *,
    window: int = 25,
    stride: int = 25,
    batch: dict[str, torch.Tensor] | None = None,
    fixed: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """class_contrast of the run's ECG occlusion (QRS onset .. T end vs the rest) and lab-text sentence occlusion
    (NT-proBNP vs the other sentences) over ``patients`` (subject_id, label), with the patient counts. ``batch``:
    the patients' raw batch, ``fixed`` its frozen encoders' vectors (the same for a run and its untrained controls),
    when already computed."""
    labels = patients["label"].to_list()
    if batch is None:
        batch = _raw_batch(run, Path(out_dir), patients["subject_id"].to_list())
    if fixed is None:
        fixed = raw_vectors(run.model, batch)
    ecg, _ = ecg_occlusion(run, out_dir, patients, window=window, stride=stride, batch=batch, fixed=fixed)
    masks = planted_ecg_masks(out_dir, patients["subject_id"].to_list(), ecg.shape[1])
    sentences = sentence_occlusion(run, out_dir, patients, fixed=fixed)
    values, inside, classes = [], [], []
    for _, rows in sentences.group_by("subject_id", maintain_order=True):
        if PLANTED_LAB in rows["sentence_label"].to_list():
            values.append(rows["attribution"].to_numpy())
            inside.append((rows["sentence_label"] == PLANTED_LAB).to_numpy())
            classes.append(int(rows["label"][0]))
    return {
        "ecg_qrs_t": class_contrast(ecg, masks, labels),
        "lab_ntprobnp": class_contrast(values, inside, classes),
        "n": len(labels),
        "n_positive": int(sum(labels)),
        "n_ntprobnp": len(values),
    }


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tasks", nargs="+", default=["diagnosis", "prognosis"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4], help="untrained control seeds")
    parser.add_argument("--window", type=int, default=25)
    parser.add_argument("--stride", type=int, default=25)
    parser.add_argument("--per-class", type=int, default=20, help="test patients per class (all three modalities)")
    parser.add_argument("--train-dir", default="train", help="under out_dir: train, or train/seeds/seed<k> (seeds)")
    args = parser.parse_args(argv)
    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    out = args.run_dir / config.get("out_dir", "results")
    settings = run_settings(args.run_dir)
    for task in args.tasks:
        trained = load_run(out, settings, out / args.train_dir / task / TRIMODAL, task)
        patients = choose_patients(trained, out, args.per_class)
        batch = _raw_batch(trained, out, patients["subject_id"].to_list())
        fixed = raw_vectors(trained.model, batch)
        runs = [("trained", trained)] + [(f"untrained{s}", untrained_run(trained, settings, s)) for s in args.seeds]
        for name, run in runs:
            measured = planted_contrasts(
                run, out, patients, window=args.window, stride=args.stride, batch=batch, fixed=fixed
            )
            print(
                json.dumps(
                    {"run": str(args.run_dir), "train_dir": args.train_dir, "task": task, "model": name, **measured}
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
