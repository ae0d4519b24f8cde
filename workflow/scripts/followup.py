from hftri_mimic.cohort.concepts import followup
from hftri_mimic.common.logs import to_file

with to_file(snakemake.log[0]):
    followup(
        index_admissions=snakemake.input.index,
        prevalent_hf=snakemake.input.prevalent,
        admissions=snakemake.input.admissions,
        patients=snakemake.input.patients,
        hf_admissions=snakemake.input.hf,
        out=snakemake.output[0],
        min_days=snakemake.params.min_days,
        censor_at_death=snakemake.params.censor_at_death,
    )
