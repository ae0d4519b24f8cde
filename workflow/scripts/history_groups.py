from hftri_mimic.ehr import history_groups
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    history_groups(
        index_admissions=snakemake.input.index,
        admissions=snakemake.input.admissions,
        diagnoses_icd=snakemake.input.diagnoses,
        out=snakemake.output[0],
        groups=snakemake.params.groups,
        include_index_admission=snakemake.params.include_index_admission,
    )
