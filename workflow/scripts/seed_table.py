"""eval/SEEDS.md: the point metric of every seed run beside the reported run (models/evaluation/seeds.py)."""

import polars as pl

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic, write_text_atomic
from models.evaluation.seeds import seed_frame, seed_summary, seeds_markdown

with to_file(snakemake.log[0]) as log:
    runs = {
        (run["task"], run["subset"], run["seed"]): pl.read_parquet(path)
        for run, path in zip(snakemake.params.runs, snakemake.input.predictions, strict=True)
    }
    frame = seed_frame(runs)
    write_parquet_atomic(frame, snakemake.output.results)
    write_text_atomic(seeds_markdown(frame, snakemake.params.reference_seed), snakemake.output.markdown)
    for row in seed_summary(frame).iter_rows(named=True):
        log.info(
            "%s %s: %s over %d seeds %.3f-%.3f",
            row["task"], row["subset"], row["metric"], row["n_seeds"], row["min"], row["max"],
        )  # fmt: skip
