"""Explanations of the trimodal diagnosis and prognosis runs (models/explain/)."""

from pathlib import Path

import torch

from hftri_mimic.common.logs import to_file
from models.explain import explain

with to_file(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    paths = explain(
        snakemake.params.out_dir,
        snakemake.params.model,
        snakemake.params.optim,
        snakemake.params.work_dirs,
        Path(snakemake.output.attention).parent,
        patients=snakemake.params.patients,
        ig_steps=snakemake.params.ig_steps,
        features_path=snakemake.input.get("features"),
        threads=snakemake.threads,
        ecg_fs=snakemake.params.ecg_fs,
    )
    log.info("explanations written: %d files", len(paths))
