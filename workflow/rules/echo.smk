# Echo stage (docs/SIGNALS.md, Echo): cohort echo studies -> view-classified clips, the best per view, in Zarr v3 shards.


checkpoint echo_shard_plan:
    input:
        # The index admissions, not the labelled cohort: a label criterion never reruns the echo stage.
        index=OUT / "cohort/index_admissions.parquet",
        records=OUT / "parquet/echo_record_list.parquet",
        code=library_code("echo_plan.py"),
    output:
        OUT / "echo/plan.parquet",
    params:
        shard_size=config["echo"]["shard_size"],
    log:
        OUT / "logs/echo/plan.log",
    benchmark:
        OUT / "benchmarks/echo/plan.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/echo_plan.py"


rule echo_files_check:
    # a real tree only: every DICOM the shards read is there (docs/FAULTS.md, Incomplete downloads)
    input:
        plan=OUT / "echo/plan.parquet",
        code=library_code("source_files_check.py"),
    output:
        OUT / "echo/source_files.json",
    params:
        tree="echo",
        root=source_roots()["echo"],
        root_key="source.echo_root",
        policy=SOURCE["missing_files"],
        missing_list=OUT / "echo/missing_files.txt",
        downloads=cohort_download_stamp("echo"),
    log:
        OUT / "logs/echo/files_check.log",
    benchmark:
        OUT / "benchmarks/echo/files_check.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/source_files_check.py"


rule view_classifier_demo:
    input:
        echo_source_files,
        truth=OUT / "source_truth",
        code=library_code("view_classifier_demo.py"),
    output:
        weights=OUT / "echo/view_classifier.pt",
        metrics=OUT / "echo/view_classifier.json",
    params:
        echo_root=OUT / "source/echo",
        settings=echo_settings(),
        classifier=config["echo"]["view_classifier"],
    log:
        OUT / "logs/echo/view_classifier_demo.log",
    benchmark:
        OUT / "benchmarks/echo/view_classifier_demo.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/view_classifier_demo.py"


rule echo_shard:
    input:
        echo_source_files,
        [] if IS_DEMO else [OUT / "echo/source_files.json"],
        plan=OUT / "echo/plan.parquet",
        classifier=echo_classifier_input,
        code=library_code("echo_shard.py"),
    output:
        store=directory(OUT / "echo/shards/{shard}.zarr"),
        index=OUT / "echo/shards/{shard}.index.parquet",
        dicoms=OUT / "echo/shards/{shard}.dicoms.parquet",
        exclusions=OUT / "echo/shards/{shard}.exclusions.parquet",
    wildcard_constraints:
        shard=r"\d+",
    params:
        echo_root=source_roots()["echo"],
        settings=echo_settings(),
        variant=config["echo"]["view_classifier"]["variant"],
        missing_files=None if IS_DEMO else SOURCE["missing_files"],
        zarr_relpath="echo/shards/{shard}.zarr",
    log:
        OUT / "logs/echo/shard_{shard}.log",
    benchmark:
        OUT / "benchmarks/echo/shard_{shard}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=360,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/echo_shard.py"


rule echo_collect:
    input:
        plan=OUT / "echo/plan.parquet",
        indexes=echo_shard_outputs("index"),
        dicoms=echo_shard_outputs("dicoms"),
        exclusions=echo_shard_outputs("exclusions"),
        code=library_code("echo_collect.py"),
    output:
        index=OUT / "echo/index.parquet",
        dicoms=OUT / "echo/dicoms.parquet",
        exclusions=OUT / "echo/exclusions.parquet",
    log:
        OUT / "logs/echo/collect.log",
    benchmark:
        OUT / "benchmarks/echo/collect.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/echo_collect.py"
