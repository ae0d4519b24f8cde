"""Encode every dataset patient once with the frozen encoders (models/training/features.py)."""

import shutil

import torch

from hftri_mimic.common.logs import to_file
from models.training.configuration import ModelConfig
from models.training.data import DatasetFiles
from models.training.factory import build_model
from models.training.features import load_or_encode

with to_file(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    model = build_model(ModelConfig.from_dict(snakemake.params.model))
    features, cached = load_or_encode(
        model,
        DatasetFiles.of_job(snakemake.params.out_dir, snakemake.input),
        snakemake.params.cache_dir,
        batch_size=snakemake.params.batch_size,
        progress=True,
    )
    tmp = f"{snakemake.output[0]}.tmp"
    shutil.copyfile(cached, tmp)
    shutil.move(tmp, snakemake.output[0])
    log.info("encoder features of %d patients: %s", len(features["subject_id"]), snakemake.output[0])
