from hftri_mimic.cohort import extend_attrition
from hftri_mimic.ecg import EXCLUSION_REASONS as ECG_REASONS
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    stages = []
    if "ecg_exclusions" in snakemake.input.keys():  # noqa: SIM118 (`in` on a Namedlist tests values)
        stages.append(("ECG", snakemake.input.ecg_exclusions, ECG_REASONS, "ecg" in snakemake.params.required))
    extend_attrition(snakemake.input.attrition, snakemake.output[0], stages)
