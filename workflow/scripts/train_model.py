"""Train diagnosis (train/val/test split) or prognosis (every repeat x fold) on one modality subset: TGMM, or a
compare variant (baseline / ablation), whose model config the rule passes in."""

import torch

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from models.evaluation.metrics import validate_predictions
from models.training.data import DatasetFiles
from models.training.experiment import Experiment, run_diagnosis, run_prognosis, write_summary

with to_file(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    task, subset = snakemake.wildcards.task, snakemake.wildcards.subset
    experiment = Experiment.from_settings(
        DatasetFiles.of_job(snakemake.params.out_dir, snakemake.input),
        snakemake.params.model,
        snakemake.params.optim,
        snakemake.params.work_dir,
        threads=snakemake.threads,
        features_path=snakemake.input.get("features"),
    )
    run = run_diagnosis if task == "diagnosis" else run_prognosis
    predictions, summary = run(experiment, subset)
    write_parquet_atomic(validate_predictions(predictions, task), snakemake.output.predictions)
    write_summary(summary, snakemake.output.summary)
    model = snakemake.wildcards.get("variant", "tgmm")
    log.info("%s %s/%s: %d runs, %d predictions", model, task, subset, len(summary["runs"]), predictions.height)
