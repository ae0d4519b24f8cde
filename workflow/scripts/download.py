from pathlib import Path

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.privacy import close_folders
from hftri_mimic.ingest.download import download_project

with to_file(snakemake.log[0]):
    settings = snakemake.params.settings
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
        name=snakemake.wildcards.project,
        workers=snakemake.threads,
        timeout_s=snakemake.params.timeout_s,
        retries=snakemake.params.retries,
        backoff_s=snakemake.params.backoff_s,
        max_file_gb=snakemake.params.max_file_gb,
    )
