"""Demo WordPiece vocabulary of a dataset's lab texts, plus the prompts and answers of a dataset that brings its own
(PTB-XL: workflow/rules/branches.smk, task_prompts)."""

from pathlib import Path

import polars as pl

from hftri_mimic.common.logs import to_file
from hftri_mimic.dataset.text import build_demo_vocab

with to_file(snakemake.log[0]):
    build_demo_vocab(
        texts=pl.read_parquet(snakemake.input.texts)["text"].to_list() + list(snakemake.params.task_texts),
        folder=Path(snakemake.output[0]).parent,
        vocab_size=snakemake.params.vocab_size,
        lowercase=snakemake.params.lowercase,
    )
