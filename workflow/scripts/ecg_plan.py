from hftri_mimic.ecg_stage import write_plan
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    write_plan(cohort=snakemake.input.cohort, out=snakemake.output[0], shard_size=snakemake.params.shard_size)
