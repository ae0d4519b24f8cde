from hftri_mimic.ehr import omr_measures
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    omr_measures(index_admissions=snakemake.input.index, omr=snakemake.input.omr, out=snakemake.output[0])
