from hftri_mimic.common.logs import to_file
from hftri_mimic.dataset.manifest import assemble_manifest

with to_file(snakemake.log[0]):
    assemble_manifest(
        cohort=snakemake.input.cohort,
        lab_values=snakemake.input.lab_values,
        out=snakemake.output[0],
        required=snakemake.params.required,
        ecg_index=snakemake.input.get("ecg_index"),
        echo_index=snakemake.input.get("echo_index"),
    )
