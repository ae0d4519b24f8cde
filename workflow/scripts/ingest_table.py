from hftri_mimic.common.logs import to_file
from hftri_mimic.ingest.tables import ingest_table

with to_file(snakemake.log[0]):
    ingest_table(
        name=snakemake.wildcards.table,
        src=snakemake.input.source,
        out=snakemake.output.table,
        exclusions_out=snakemake.output.exclusions,
        columns=snakemake.params.columns,
        max_rejected_share=snakemake.params.max_rejected_share,
        threads=snakemake.threads,
        mem_mb=snakemake.resources.mem_mb,
        temp_dir=snakemake.resources.tmpdir,
    )
