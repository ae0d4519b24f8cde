from hftri_mimic.ecg_stage import collect
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    collect(
        plan=snakemake.input.plan,
        indexes=list(snakemake.input.indexes),
        exclusions=list(snakemake.input.exclusions),
        index_out=snakemake.output.index,
        exclusions_out=snakemake.output.exclusions,
    )
