from hftri_mimic.common.logs import to_file
from hftri_mimic.dataset.ehr import omr_measures

with to_file(snakemake.log[0]):
    omr_measures(index_admissions=snakemake.input.index, omr=snakemake.input.omr, out=snakemake.output[0])
