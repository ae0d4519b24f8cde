from hftri_mimic.echo_stage import write_plan
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    write_plan(
        index_admissions=snakemake.input.index,
        echo_record_list=snakemake.input.records,
        out=snakemake.output[0],
        shard_size=snakemake.params.shard_size,
    )
