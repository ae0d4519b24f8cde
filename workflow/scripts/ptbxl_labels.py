"""MI / normal labels and the train / val / test folds of every PTB-XL record, with named exclusions."""

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from hftri_mimic.ptbxl.dataset import label_records

with to_file(snakemake.log[0]):
    kept, excluded = label_records(
        snakemake.input.database,
        snakemake.input.statements,
        min_likelihood=snakemake.params.min_likelihood,
        folds=snakemake.params.folds,
        records=snakemake.params.records,
        norm_only=snakemake.params.norm_only,
    )
    write_parquet_atomic(kept, snakemake.output.records)
    write_parquet_atomic(excluded, snakemake.output.exclusions)
