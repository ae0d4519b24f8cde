# Download (not part of `all`): `snakemake --cores 4 download` mirrors the configured PhysioNet projects
# into {dest_root}/<host>/<url path> with resumable, SHA-256-verified transfers (hftri_mimic.ingest.download).
# Credentials are read at run time from PHYSIONET_USERNAME / PHYSIONET_PASSWORD or ~/.netrc: they are
# never in config, params, logs or outputs. Parsing this file makes no network access.
import re

from hftri_mimic.ingest.download import check_download_config, project_settings

DOWNLOAD = config["download"]
DOWNLOAD_ROOT = Path(DOWNLOAD["dest_root"])
DOWNLOAD_PROJECTS = DOWNLOAD["projects"]

check_download_config(DOWNLOAD)


rule download:
    input:
        expand(str(DOWNLOAD_ROOT / "{project}.download.json"), project=list(DOWNLOAD_PROJECTS)),


rule download_project:
    input:
        # A configured file list is an input: a workflow rule may write it (e.g. the cohort's DICOMs).
        file_list=lambda wildcards: DOWNLOAD_PROJECTS[wildcards.project]["file_list"] or [],
        code=library_code("download.py"),
    output:
        DOWNLOAD_ROOT / "{project}.download.json",
    wildcard_constraints:
        project="|".join(re.escape(name) for name in DOWNLOAD_PROJECTS) or "(?!x)x",
    params:
        settings=lambda wildcards: project_settings(DOWNLOAD, wildcards.project),
        timeout_s=DOWNLOAD["timeout_s"],
        retries=DOWNLOAD["retries"],
        backoff_s=DOWNLOAD["backoff_s"],
        max_file_gb=DOWNLOAD["max_file_gb"],
    log:
        OUT / "logs/download/{project}.log",
    benchmark:
        OUT / "benchmarks/download/{project}.tsv"
    threads: 4
    resources:
        mem_mb=4000,
        runtime=30,  # minutes
    localrule: True
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/download.py"
