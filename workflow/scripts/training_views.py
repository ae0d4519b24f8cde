"""The training jobs' views of the dataset (hftri_mimic.dataset.manifest.write_training_views)."""

from hftri_mimic.common.logs import to_file
from hftri_mimic.dataset.manifest import write_training_views

with to_file(snakemake.log[0]):
    write_training_views(
        manifest=snakemake.input.manifest,
        splits=snakemake.input.splits,
        inputs_out=snakemake.output.inputs,
        task_out={"diagnosis": snakemake.output.diagnosis, "prognosis": snakemake.output.prognosis},
    )
