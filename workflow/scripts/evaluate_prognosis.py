"""Prognosis C-index mean ± sd over the folds per modality subset, and Kaplan-Meier figures."""

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from models.evaluation.metrics import plot_km
from models.evaluation.tasks import prognosis_results

with to_file(snakemake.log[0]) as log:
    subsets = snakemake.params.subsets
    results, folds, km = prognosis_results(
        dict(zip(subsets, snakemake.input.predictions, strict=True)),
        threshold=snakemake.params.threshold,
        repeat=snakemake.params.repeat,
    )
    write_parquet_atomic(results, snakemake.output.results)
    write_parquet_atomic(folds, snakemake.output.folds)
    for subset, path in zip(subsets, snakemake.output.km, strict=True):
        groups, pvalue = km[subset]
        plot_km(groups, pvalue, path, title=f"Predicted risk groups, {subset}")
    log.info("prognosis: %d subsets evaluated over %d folds each", len(subsets), folds.height // len(subsets))
