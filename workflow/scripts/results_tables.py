"""RESULTS.md: the paper's Tables 2 and 3 for this cohort, with the figures."""

from pathlib import Path

import polars as pl

from hftri_mimic.logs import to_file
from hftri_mimic.storage import write_text_atomic
from models.results import results_markdown

with to_file(snakemake.log[0]) as log:
    frames = {task: pl.read_parquet(path) for task, path in snakemake.input.items()}
    out = Path(snakemake.output[0])
    figures = {}
    if "diagnosis" in frames:
        figures["ROC curves, HF diagnosis"] = "figures/roc_diagnosis.png"
    if "prognosis" in frames:
        figures["Kaplan-Meier, lab+ecg+echo"] = "figures/km_lab+ecg+echo.png"
    text = results_markdown(
        frames.get("diagnosis"),
        frames.get("prognosis"),
        frames.get("retrieval"),
        retrieval_subset=snakemake.params.retrieval_subset,
        retrieval_pool=snakemake.params.retrieval_pool,
        figures={k: v for k, v in figures.items() if (out.parent / v).exists()},
    )
    write_text_atomic(text, out)
    log.info("results tables written for %s", ", ".join(frames))
