"""The training jobs' views of the dataset (hftri_mimic.dataset.write_training_views)."""

from hftri_mimic.dataset import write_training_views
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    write_training_views(
        manifest=snakemake.input.manifest,
        splits=snakemake.input.splits,
        inputs_out=snakemake.output.inputs,
        task_out={"diagnosis": snakemake.output.diagnosis, "prognosis": snakemake.output.prognosis},
    )
