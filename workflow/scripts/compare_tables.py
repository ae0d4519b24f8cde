"""Tables 5-6 and the Fig. 7 sweeps: every compare variant against TGMM on the same patients, with paired tests."""

from pathlib import Path

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.report import markdown_page
from hftri_mimic.common.storage import write_parquet_atomic, write_text_atomic
from models.evaluation.compare import compare_markdown, compare_results, plot_compare

with to_file(snakemake.log[0]) as log:
    runs = [{**run, "path": path} for run, path in zip(snakemake.params.runs, snakemake.input.variants, strict=True)]
    # TGMM's predictions: .../eval/predictions/{task}/{subset}.parquet
    references = {tuple(Path(path).with_suffix("").parts[-2:]): path for path in snakemake.input.references}
    results = compare_results(
        runs,
        references,
        n_resamples=snakemake.params.n_resamples,
        seed=snakemake.params.seed,
        alpha=snakemake.params.alpha,
    )
    labels = {run["variant"]: run["label"] for run in runs}
    write_parquet_atomic(results, snakemake.output.results)
    tables = compare_markdown(results, labels, alpha=snakemake.params.alpha)
    write_text_atomic(tables, snakemake.output.markdown)
    write_text_atomic(markdown_page(tables, "Baselines and ablations against TGMM"), snakemake.output.html)
    for table, path in zip(snakemake.params.tables, snakemake.output.figures, strict=True):
        plot_compare(results, table, labels, path)
    log.info("compare: %d variant runs against TGMM, %d result rows", len(runs), results.height)
