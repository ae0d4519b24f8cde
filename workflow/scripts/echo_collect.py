from hftri_mimic.echo_stage import collect
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    collect(
        plan=snakemake.input.plan,
        indexes=list(snakemake.input.indexes),
        dicoms=list(snakemake.input.dicoms),
        exclusions=list(snakemake.input.exclusions),
        index_out=snakemake.output.index,
        dicoms_out=snakemake.output.dicoms,
        exclusions_out=snakemake.output.exclusions,
    )
