"""Train cross-modal retrieval (InfoNCE) and rank the test patients in every direction of the subset."""

from pathlib import Path

import torch

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from models.evaluation.metrics import write_predictions
from models.training.data import DatasetFiles
from models.training.experiment import Experiment, run_retrieval, write_summary

with to_file(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    experiment = Experiment.from_settings(
        DatasetFiles.of_job(snakemake.params.out_dir, snakemake.input),
        snakemake.params.model,
        snakemake.params.optim,
        snakemake.params.work_dir,
        threads=snakemake.threads,
        features_path=snakemake.input.get("features"),
    )
    directions, embeddings, summary = run_retrieval(experiment, snakemake.params.subset, snakemake.params.pool)
    for path in snakemake.output.predictions:
        name = Path(path).stem
        if name not in directions:
            raise RuntimeError(f"retrieval direction {name}: fewer than two test patients have both modalities")
        write_predictions(directions[name], snakemake.params.out_dir, "retrieval", name)  # = path
    write_parquet_atomic(embeddings, snakemake.output.embeddings)
    write_summary(summary, snakemake.output.summary)
    log.info(
        "retrieval on %s: %d directions, %d queries each",
        snakemake.params.subset,
        len(directions),
        min(d.height for d in directions.values()),
    )
