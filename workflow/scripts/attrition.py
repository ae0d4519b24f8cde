from hftri_mimic.cohort.concepts import extend_attrition, patient_status
from hftri_mimic.common.logs import to_file
from hftri_mimic.ecg.signal import EXCLUSION_REASONS as ECG_REASONS
from hftri_mimic.echo.stage import STUDY_EXCLUSION_REASONS as ECHO_REASONS

with to_file(snakemake.log[0]):
    required = snakemake.params.required
    stages = []
    # `in` on Snakemake's Namedlist tests values, so look the names up in keys()
    names = snakemake.input.keys()
    if "ecg_exclusions" in names:
        stages.append(("ECG", snakemake.input.ecg_exclusions, ECG_REASONS, "ecg" in required))
    if "echo_exclusions" in names:
        stages.append(("Echo study", snakemake.input.echo_exclusions, ECHO_REASONS, "echo" in required))
    attrition, stage_removed = extend_attrition(snakemake.input.attrition, snakemake.output.attrition, stages)
    patient_status(
        snakemake.input.eligibility, stage_removed, attrition, snakemake.input.manifest, snakemake.output.status
    )
