from hftri_mimic.cohort.concepts import ecg_admissions, echo_admissions
from hftri_mimic.common.logs import to_file

concept = {"ecg_admissions": ecg_admissions, "echo_admissions": echo_admissions}[snakemake.rule]
with to_file(snakemake.log[0]):
    concept(
        snakemake.input.admissions,
        snakemake.input.records,
        out=snakemake.output.pairs,
        window=snakemake.params.window,
        places_out=snakemake.output.places,
        threads=snakemake.threads,
        mem_mb=snakemake.resources.mem_mb,
    )
