from hftri_mimic.common.logs import to_file
from hftri_mimic.ecg.stage import collect, settings_from_config

with to_file(snakemake.log[0]):
    collect(
        plan=snakemake.input.plan,
        measured=list(snakemake.input.measured),
        exclusions=list(snakemake.input.exclusions),
        settings=settings_from_config(snakemake.params.settings),
        index_out=snakemake.output.index,
        exclusions_out=snakemake.output.exclusions,
    )
