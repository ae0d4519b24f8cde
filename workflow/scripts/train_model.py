"""Train diagnosis (train/val/test split) or prognosis (every repeat x fold) on one modality subset."""

import torch

from hftri_mimic.logs import to_file
from models.evaluation import write_predictions
from models.experiment import Experiment, run_diagnosis, run_prognosis, write_summary

with to_file(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    task, subset = snakemake.wildcards.task, snakemake.wildcards.subset
    experiment = Experiment.from_settings(
        snakemake.params.out_dir,
        snakemake.params.model,
        snakemake.params.optim,
        snakemake.params.work_dir,
        threads=snakemake.threads,
        features_path=snakemake.input.get("features"),
    )
    run = run_diagnosis if task == "diagnosis" else run_prognosis
    predictions, summary = run(experiment, subset)
    write_predictions(predictions, snakemake.params.out_dir, task, subset)  # = snakemake.output.predictions
    write_summary(summary, snakemake.output.summary)
    log.info("%s/%s: %d runs, %d predictions", task, subset, len(summary["runs"]), predictions.height)
