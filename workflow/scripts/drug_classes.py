from hftri_mimic.ehr import drug_classes
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    drug_classes(
        index_admissions=snakemake.input.index,
        prescriptions=snakemake.input.prescriptions,
        out=snakemake.output[0],
        classes=snakemake.params.classes,
        reference=snakemake.params.reference,
        before_admission=snakemake.params.before_admission,
    )
