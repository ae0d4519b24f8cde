"""Diagnosis AUC / accuracy with bootstrap CIs per modality subset, and the ROC figure."""

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from models.evaluation.metrics import plot_roc
from models.evaluation.tasks import diagnosis_results

with to_file(snakemake.log[0]) as log:
    results, curves = diagnosis_results(
        dict(zip(snakemake.params.subsets, snakemake.input.predictions, strict=True)),
        n_resamples=snakemake.params.n_resamples,
        seed=snakemake.params.seed,
        alpha=snakemake.params.alpha,
    )
    write_parquet_atomic(results, snakemake.output.results)
    plot_roc(curves, snakemake.output.roc, title="HF diagnosis (test split)")
    log.info("diagnosis: %d subsets evaluated", len(curves))
