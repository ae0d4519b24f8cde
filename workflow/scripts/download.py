from pathlib import Path

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.privacy import close_folders
from hftri_mimic.ingest.download import download_project

with to_file(snakemake.log[0]):
    settings = snakemake.params.settings
    options = snakemake.params.options
    # The download root gets the private mode (and group) before the first file arrives. Read from config rather
    # than params on purpose: changing who may read the files must not re-verify terabytes.
    privacy = snakemake.config["privacy"]
    dest_root = Path(snakemake.output[0]).parent
    dest_root.mkdir(parents=True, exist_ok=True)
    close_folders([dest_root], privacy["group_access"], privacy["group"])
    download_project(
        url=settings["url"],
        dest=settings["dest"],
        include=settings["include"],
        file_list=snakemake.input.get("file_list") or None,
        manifest=snakemake.output[0],
        # phase 2 (download_cohort_project) logs as "<project> cohort"
        name=snakemake.wildcards.project + (" cohort" if snakemake.rule == "download_cohort_project" else ""),
        access=settings["access"],
        workers=snakemake.threads,
        timeout_s=options["timeout_s"],
        retries=options["retries"],
        backoff_s=options["backoff_s"],
        max_file_gb=options["max_file_gb"],
        reverify=options["reverify"],
        report=print,  # the count and size to fetch, in the terminal before the transfers (stdout is not the log)
    )
