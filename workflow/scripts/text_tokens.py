"""The dataset's lab text as token ids (hftri/text.parquet); with a manifest, the text and the lab table
(hftri/labs.parquet) keep the manifest's patients only, so every table of hftri/ has the same patients."""

from pathlib import Path

import polars as pl

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from hftri_mimic.dataset.text import fit_texts, load_tokenizer

with to_file(snakemake.log[0]) as log:
    texts = pl.read_parquet(snakemake.input.texts)
    # `in` on Snakemake's Namedlist tests values, so look the names up in keys()
    names = snakemake.input.keys()
    if "manifest" in names:
        patients = pl.read_parquet(snakemake.input.manifest, columns=["subject_id"])
        texts = texts.join(patients, on="subject_id", how="semi")
        labs = pl.read_parquet(snakemake.input.labs).join(patients, on="subject_id", how="semi")
        write_parquet_atomic(labs, snakemake.output.labs)
        log.info("text and labs of the %d manifest patients", patients.height)
    texts = fit_texts(
        texts=texts,
        tokenizer=load_tokenizer(Path(snakemake.input.vocab).parent, lowercase=snakemake.params.lowercase),
        max_tokens=snakemake.params.max_tokens,
        on_overflow=snakemake.params.on_overflow,
    )
    write_parquet_atomic(texts, snakemake.output.text)
