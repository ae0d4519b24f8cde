from hftri_mimic.cohort.concepts import prevalent_hf
from hftri_mimic.common.logs import to_file

with to_file(snakemake.log[0]):
    prevalent_hf(
        index_admissions=snakemake.input.index,
        admissions=snakemake.input.admissions,
        hf_admissions=snakemake.input.hf,
        out=snakemake.output[0],
        lookback_days=snakemake.params.lookback_days,
    )
