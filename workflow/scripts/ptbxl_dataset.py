"""The PTB-XL dataset in the HFTri layout: manifest, metadata values and text, splits, attrition."""

import polars as pl

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from hftri_mimic.ptbxl.dataset import build_dataset

with to_file(snakemake.log[0]):
    tables = build_dataset(
        records=pl.read_parquet(snakemake.input.records),
        label_exclusions=pl.read_parquet(snakemake.input.label_exclusions),
        ecg_index=pl.read_parquet(snakemake.input.ecg_index),
        ecg_exclusions=pl.read_parquet(snakemake.input.ecg_exclusions),
    )
    for name, frame in tables.items():
        write_parquet_atomic(frame, snakemake.output[name])
