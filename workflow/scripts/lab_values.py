from hftri_mimic.common.logs import to_file
from hftri_mimic.dataset.ehr import lab_values

with to_file(snakemake.log[0]):
    lab_values(
        index_admissions=snakemake.input.index,
        labevents=snakemake.input.labevents,
        d_labitems=snakemake.input.d_labitems,
        out=snakemake.output.values,
        exclusions_out=snakemake.output.exclusions,
        lab_itemids=snakemake.params.lab_itemids,
        reference=snakemake.params.reference,
        storetime_before_reference=snakemake.params.storetime_before_reference,
        threads=snakemake.threads,
        mem_mb=snakemake.resources.mem_mb,
    )
