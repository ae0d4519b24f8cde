import polars as pl

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from hftri_mimic.dataset.text import build_texts

with to_file(snakemake.log[0]):
    labs, texts = build_texts(
        patients=pl.read_parquet(snakemake.input.patients),
        lab_values=pl.read_parquet(snakemake.input.lab_values),
        measures=pl.read_parquet(snakemake.input.measures),
        history=pl.read_parquet(snakemake.input.history),
        drugs=pl.read_parquet(snakemake.input.drugs),
        lab_itemids=snakemake.params.lab_itemids,
        history_order=snakemake.params.history_order,
        drug_order=snakemake.params.drug_order,
    )
    write_parquet_atomic(labs, snakemake.output.labs)
    write_parquet_atomic(texts, snakemake.output.texts)
