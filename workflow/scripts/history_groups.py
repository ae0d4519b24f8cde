from hftri_mimic.common.logs import to_file
from hftri_mimic.dataset.ehr import history_groups

with to_file(snakemake.log[0]):
    history_groups(
        index_admissions=snakemake.input.index,
        admissions=snakemake.input.admissions,
        diagnoses_icd=snakemake.input.diagnoses,
        out=snakemake.output[0],
        groups=snakemake.params.groups,
        include_index_admission=snakemake.params.include_index_admission,
    )
