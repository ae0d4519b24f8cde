from hftri_mimic.cohort.concepts import index_admissions
from hftri_mimic.common.logs import to_file

with to_file(snakemake.log[0]):
    index_admissions(
        admissions=snakemake.input.admissions,
        patients=snakemake.input.patients,
        out=snakemake.output.index,
        attrition_out=snakemake.output.attrition,
        eligibility_out=snakemake.output.eligibility,
        min_age=snakemake.params.min_age,
        require_modalities=snakemake.params.require_modalities,
        order=snakemake.params.order,
        lab_admissions=snakemake.input.get("lab_admissions"),
        ecg_admissions=snakemake.input.get("ecg_admissions"),
        echo_admissions=snakemake.input.get("echo_admissions"),
        admission_exclusions=snakemake.input.admission_exclusions,
        threads=snakemake.threads,
        mem_mb=snakemake.resources.mem_mb,
    )
