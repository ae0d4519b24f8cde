from hftri_mimic.common.logs import to_file
from hftri_mimic.echo.stage import classifier_config, echo_settings, process_shard

with to_file(snakemake.log[0]):
    echo = {**snakemake.params.settings, "view_classifier": {"variant": snakemake.params.variant}}
    process_shard(
        plan=snakemake.input.plan,
        shard=int(snakemake.wildcards.shard),
        echo_root=snakemake.params.echo_root,
        settings=echo_settings(echo),
        classifier=snakemake.input.classifier,
        config=classifier_config(echo),
        zarr_out=snakemake.output.store,
        index_out=snakemake.output.index,
        dicoms_out=snakemake.output.dicoms,
        exclusions_out=snakemake.output.exclusions,
        zarr_relpath=snakemake.params.zarr_relpath,
        missing_files=snakemake.params.missing_files,
        threads=snakemake.threads,
    )
