from hftri_mimic.common.logs import to_file
from hftri_mimic.dataset.ehr import drug_classes

with to_file(snakemake.log[0]):
    drug_classes(
        index_admissions=snakemake.input.index,
        prescriptions=snakemake.input.prescriptions,
        out=snakemake.output[0],
        classes=snakemake.params.classes,
        reference=snakemake.params.reference,
        before_admission=snakemake.params.before_admission,
    )
