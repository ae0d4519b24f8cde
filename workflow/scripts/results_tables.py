"""RESULTS.md (with the figures) and RESULTS.html (for the report): the paper's Tables 2 and 3 for this cohort;
environment.json: the lock the numbers came from and whether the installed packages match it."""

from pathlib import Path

import polars as pl

from hftri_mimic.common.environment import write_environment_record
from hftri_mimic.common.logs import to_file
from hftri_mimic.common.report import markdown_page
from hftri_mimic.common.storage import write_text_atomic
from models.evaluation.tasks import results_markdown

with to_file(snakemake.log[0]) as log:
    frames = {task: pl.read_parquet(path) for task, path in snakemake.input.items() if task not in ("lock", "code")}
    out = Path(snakemake.output.markdown)
    figures = {}
    if "diagnosis" in frames:
        figures["ROC curves, HF diagnosis"] = "figures/roc_diagnosis.png"
    if "prognosis" in frames:
        figures["Kaplan-Meier, lab+ecg+echo"] = "figures/km_lab+ecg+echo.png"
    tables = {
        "diagnosis": frames.get("diagnosis"),
        "prognosis": frames.get("prognosis"),
        "retrieval": frames.get("retrieval"),
        "retrieval_candidates": frames.get("retrieval_candidates"),
        "retrieval_subset": snakemake.params.retrieval_subset,
        "retrieval_pool": snakemake.params.retrieval_pool,
    }
    figures = {k: v for k, v in figures.items() if (out.parent / v).exists()}
    write_text_atomic(results_markdown(**tables, figures=figures), out)
    # the report shows the figures as results of their own
    write_text_atomic(markdown_page(results_markdown(**tables), "TGMM results"), snakemake.output.html)
    environment = write_environment_record(Path(snakemake.input.lock), snakemake.output.environment)
    if not environment["matches_lock"]:
        log.warning("installed packages differ from the lock: %s", sorted(environment["differences"]))
    log.info("results tables written for %s", ", ".join(frames))
