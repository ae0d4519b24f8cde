from hftri_mimic.common.logs import to_file
from hftri_mimic.ingest.source_files import check_files_present

with to_file(snakemake.log[0]):
    check_files_present(
        plan=snakemake.input.plan,
        tree=snakemake.params.tree,
        root=snakemake.params.root,
        root_key=snakemake.params.root_key,
        policy=snakemake.params.policy,
        summary_out=snakemake.output[0],
        missing_out=snakemake.params.missing_list,
    )
