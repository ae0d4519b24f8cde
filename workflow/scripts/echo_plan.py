from hftri_mimic.common.logs import to_file
from hftri_mimic.echo.stage import write_plan

with to_file(snakemake.log[0]):
    write_plan(
        index_admissions=snakemake.input.index,
        echo_record_list=snakemake.input.records,
        out=snakemake.output[0],
        shard_size=snakemake.params.shard_size,
    )
