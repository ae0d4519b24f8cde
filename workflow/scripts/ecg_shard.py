from hftri_mimic.ecg_stage import process_shard, settings_from_config
from hftri_mimic.logs import to_file

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
    )
