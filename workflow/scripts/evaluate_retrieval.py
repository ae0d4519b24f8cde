"""Retrieval LRAP, Recall@1, Recall@2 with bootstrap CIs per direction."""

from pathlib import Path

from hftri_mimic.logs import to_file
from hftri_mimic.storage import write_parquet_atomic
from models.results import retrieval_results

with to_file(snakemake.log[0]) as log:
    results = retrieval_results(
        {Path(path).stem: path for path in snakemake.input},
        n_resamples=snakemake.params.n_resamples,
        seed=snakemake.params.seed,
        alpha=snakemake.params.alpha,
    )
    write_parquet_atomic(results, snakemake.output.results)
    log.info("retrieval: %d directions evaluated", results["subset"].n_unique())
