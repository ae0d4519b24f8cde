"""Table 4 (MI vs normal on PTB-XL): accuracy and AUC with bootstrap CIs per modality subset, ROC figure;
environment.json: the lock the numbers came from."""

from pathlib import Path

import polars as pl

from hftri_mimic.common.environment import write_environment_record
from hftri_mimic.common.logs import to_file
from hftri_mimic.common.report import markdown_page
from hftri_mimic.common.storage import write_parquet_atomic, write_text_atomic
from hftri_mimic.ptbxl.dataset import table4_markdown
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
    plot_roc(curves, snakemake.output.roc, title="MI vs normal, PTB-XL (test folds)")
    table = table4_markdown(
        results,
        pl.read_parquet(snakemake.input.manifest),
        source=snakemake.params.source,
        min_likelihood=snakemake.params.min_likelihood,
    )
    write_text_atomic(table + "\n![ROC curves](figures/roc.png)\n", snakemake.output.table)
    write_text_atomic(markdown_page(table, "Table 4: PTB-XL"), snakemake.output.html)  # for the report
    write_environment_record(Path(snakemake.input.lock), snakemake.output.environment)
    log.info("PTB-XL Table 4: %d subsets evaluated", len(curves))
