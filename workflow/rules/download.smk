# Download (not part of `all`; docs/RUNNING.md, Downloading from PhysioNet), in two phases:
#   `snakemake --cores 4 download`         phase 1: each configured project's `include` (the hosp tables, the record
#                                          lists) and its checksum list;
#   `snakemake --cores 4 download_cohort`  phase 2: from the cohort and the ECG/echo plans (which the run builds from
#                                          phase 1's tables), exactly the files the ECG and echo stages read.
# Files go to {dest_root}/<host>/<url path>, resumable and SHA-256 verified (hftri_mimic.ingest.download). Credentials
# are read at run time from PHYSIONET_USERNAME / PHYSIONET_PASSWORD or ~/.netrc, for credentialed projects only: they
# are never in config, params, logs or outputs. Parsing this file makes no network access.
import re

from hftri_mimic.ingest.download import check_download_config

DOWNLOAD = config["download"]
DOWNLOAD_ROOT = Path(DOWNLOAD["dest_root"])
DOWNLOAD_PROJECTS = DOWNLOAD["projects"]
COHORT_PROJECTS = cohort_projects(DOWNLOAD)  # tree (ecg, echo) -> the project that receives its cohort files
# The plans that name the files each tree's stage reads (ecg.smk, echo.smk).
COHORT_PLANS = {"ecg": OUT / "ecg/plan.parquet", "echo": OUT / "echo/plan.parquet"}

check_download_config(DOWNLOAD)


rule download:
    input:
        expand(str(DOWNLOAD_ROOT / "{project}.download.json"), project=list(DOWNLOAD_PROJECTS)),


rule download_cohort:
    input:
        # the trees the source has (an ECG-only run with echo_root null fetches no DICOM)
        [DOWNLOAD_ROOT / f"{p}.cohort.download.json" for t, p in COHORT_PROJECTS.items() if t in available_modalities()],


rule download_project:
    input:
        # A configured file list is an input: a workflow rule may write it.
        file_list=lambda wildcards: DOWNLOAD_PROJECTS[wildcards.project]["file_list"] or [],
        code=library_code("download.py"),
    output:
        DOWNLOAD_ROOT / "{project}.download.json",
    wildcard_constraints:
        project="|".join(re.escape(name) for name in DOWNLOAD_PROJECTS) or "(?!x)x",
    params:
        settings=lambda wildcards: project_settings(DOWNLOAD, wildcards.project),
        options=download_params,
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


rule cohort_file_list:
    input:
        plan=lambda wildcards: COHORT_PLANS[wildcards.tree],
        code=library_code("cohort_file_list.py"),
    output:
        OUT / "download/{tree}_files.txt",
    wildcard_constraints:
        tree="ecg|echo",
    log:
        OUT / "logs/download/{tree}_files.log",
    benchmark:
        OUT / "benchmarks/download/{tree}_files.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/cohort_file_list.py"


rule download_cohort_project:
    input:
        file_list=lambda wildcards: OUT / f"download/{DOWNLOAD_PROJECTS[wildcards.project]['cohort_files']}_files.txt",
        code=library_code("download.py"),
    output:
        DOWNLOAD_ROOT / "{project}.cohort.download.json",
    wildcard_constraints:
        project="|".join(re.escape(name) for name in COHORT_PROJECTS.values()) or "(?!x)x",
    params:
        settings=cohort_download_settings,
        options=download_params,
    log:
        OUT / "logs/download/{project}.cohort.log",
    benchmark:
        OUT / "benchmarks/download/{project}.cohort.tsv"
    threads: 4
    resources:
        mem_mb=4000,
        runtime=30,  # minutes
    localrule: True
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/download.py"
