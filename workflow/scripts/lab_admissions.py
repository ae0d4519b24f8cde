from hftri_mimic.cohort.concepts import lab_admissions
from hftri_mimic.common.logs import to_file

with to_file(snakemake.log[0]):
    lab_admissions(
        labevents=snakemake.input.labevents,
        out=snakemake.output[0],
        lab_itemids=snakemake.params.lab_itemids,
        threads=snakemake.threads,
        mem_mb=snakemake.resources.mem_mb,
        temp_dir=snakemake.resources.tmpdir,
    )
