from hftri_mimic.cohort.concepts import assemble_cohort
from hftri_mimic.common.logs import to_file

with to_file(snakemake.log[0]):
    assemble_cohort(
        index_admissions=snakemake.input.index,
        prevalent_hf=snakemake.input.prevalent,
        followup=snakemake.input.followup,
        attrition=snakemake.input.attrition,
        out=snakemake.output.cohort,
        attrition_out=snakemake.output.attrition,
    )
