from hftri_mimic.common.logs import to_file
from hftri_mimic.ecg.stage import write_plan

with to_file(snakemake.log[0]):
    write_plan(cohort=snakemake.input.cohort, out=snakemake.output[0], shard_size=snakemake.params.shard_size)
