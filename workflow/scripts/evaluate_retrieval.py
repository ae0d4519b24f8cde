"""Retrieval LRAP, Recall@1, Recall@2 with bootstrap CIs per direction: against the whole candidate pool (from the
ranks the retrieval job saved) and among k candidates (from its embeddings; the paper's Table 3 setting)."""

from pathlib import Path

import polars as pl

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from models.evaluation.tasks import candidate_set_results, retrieval_results

with to_file(snakemake.log[0]) as log:
    bootstrap = {
        "n_resamples": snakemake.params.n_resamples,
        "seed": snakemake.params.seed,
        "alpha": snakemake.params.alpha,
    }
    directions = {Path(path).stem: path for path in snakemake.input.predictions}
    results = retrieval_results(directions, **bootstrap)
    write_parquet_atomic(results, snakemake.output.results)
    candidates = candidate_set_results(
        pl.read_parquet(snakemake.input.embeddings),
        list(directions),
        k=snakemake.params.candidates,
        n_draws=snakemake.params.candidate_draws,
        pool=snakemake.params.pool,
        **bootstrap,
    )
    write_parquet_atomic(candidates, snakemake.output.candidates)
    lrap = candidates.filter(metric="lrap")
    log.info(
        "retrieval: %d directions evaluated; among %d candidates LRAP %.3f-%.3f (chance %.3f)",
        results["subset"].n_unique(),
        snakemake.params.candidates,
        lrap["value"].min(),
        lrap["value"].max(),
        lrap["chance"][0],
    )
