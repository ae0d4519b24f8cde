from hftri_mimic.cohort.concepts import hf_admissions
from hftri_mimic.common.logs import to_file

with to_file(snakemake.log[0]):
    hf_admissions(
        diagnoses_icd=snakemake.input.diagnoses,
        out=snakemake.output[0],
        icd9=snakemake.params.codes["icd9"],
        icd10=snakemake.params.codes["icd10"],
        threads=snakemake.threads,
        mem_mb=snakemake.resources.mem_mb,
    )
