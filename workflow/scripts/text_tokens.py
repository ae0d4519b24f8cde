from pathlib import Path

import polars as pl

from hftri_mimic.logs import to_file
from hftri_mimic.storage import write_parquet_atomic
from hftri_mimic.text import fit_texts, load_tokenizer

with to_file(snakemake.log[0]):
    texts = fit_texts(
        texts=pl.read_parquet(snakemake.input.texts),
        tokenizer=load_tokenizer(Path(snakemake.input.vocab).parent, lowercase=snakemake.params.lowercase),
        max_tokens=snakemake.params.max_tokens,
        on_overflow=snakemake.params.on_overflow,
    )
    write_parquet_atomic(texts, snakemake.output[0])
