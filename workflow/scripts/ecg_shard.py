from hftri_mimic.common.logs import to_file
from hftri_mimic.ecg.stage import process_shard, settings_from_config

with to_file(snakemake.log[0]):
    process_shard(
        plan=snakemake.input.plan,
        shard=int(snakemake.wildcards.shard),
        ecg_root=snakemake.params.ecg_root,
        settings=settings_from_config(snakemake.params.settings),
        zarr_out=snakemake.output.store,
        measured_out=snakemake.output.measured,
        exclusions_out=snakemake.output.exclusions,
        zarr_relpath=snakemake.params.zarr_relpath,
        missing_files=snakemake.params.missing_files,
    )
