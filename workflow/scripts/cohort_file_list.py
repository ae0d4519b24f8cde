from hftri_mimic.common.logs import to_file
from hftri_mimic.ingest.source_files import write_file_list

with to_file(snakemake.log[0]):
    write_file_list(plan=snakemake.input.plan, tree=snakemake.wildcards.tree, out=snakemake.output[0])
