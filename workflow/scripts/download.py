from hftri_mimic.download import download_project
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    settings = snakemake.params.settings
    download_project(
        url=settings["url"],
        dest=settings["dest"],
        include=settings["include"],
        file_list=snakemake.input[0] if snakemake.input else None,
        manifest=snakemake.output[0],
        name=snakemake.wildcards.project,
        workers=snakemake.threads,
        timeout_s=snakemake.params.timeout_s,
        retries=snakemake.params.retries,
        backoff_s=snakemake.params.backoff_s,
    )
