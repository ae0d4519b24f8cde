from hftri_mimic.common.logs import to_file
from hftri_mimic.echo.stage import collect

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
