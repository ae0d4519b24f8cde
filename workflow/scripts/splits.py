import polars as pl

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from hftri_mimic.dataset.splits import make_splits

with to_file(snakemake.log[0]):
    config = snakemake.params.splits
    splits = make_splits(
        manifest=pl.read_parquet(snakemake.input.manifest),
        stratify=config["diagnosis_stratify"],
        ratio=config["diagnosis_ratio"],
        folds=config["prognosis_folds"],
        repeats=config["prognosis_repeats"],
        validation=config["prognosis_validation"],
        seed=config["seed"],
    )
    write_parquet_atomic(splits, snakemake.output[0])
