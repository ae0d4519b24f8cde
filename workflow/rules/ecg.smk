# ECG stage (docs/SIGNALS.md, ECG): cohort ECGs -> quality-checked (12, 2500) float32 arrays in Zarr v3 shards.


checkpoint ecg_shard_plan:
    input:
        # The index admissions, not the labelled cohort: a label criterion never reruns the ECG stage.
        cohort=OUT / "cohort/index_admissions.parquet",
        code=library_code("ecg_plan.py"),
    output:
        OUT / "ecg/plan.parquet",
    params:
        shard_size=config["ecg"]["shard_size"],
    log:
        OUT / "logs/ecg/plan.log",
    benchmark:
        OUT / "benchmarks/ecg/plan.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/ecg_plan.py"


rule ecg_shard:
    input:
        ecg_source_files,
        plan=OUT / "ecg/plan.parquet",
        code=library_code("ecg_shard.py"),
    output:
        store=directory(OUT / "ecg/shards/{shard}.zarr"),
        measured=OUT / "ecg/shards/{shard}.measured.parquet",
        exclusions=OUT / "ecg/shards/{shard}.exclusions.parquet",
    wildcard_constraints:
        shard=r"\d+",
    params:
        ecg_root=source_roots()["ecg"],
        settings=ecg_processing_settings(),
        zarr_relpath="ecg/shards/{shard}.zarr",
    log:
        OUT / "logs/ecg/shard_{shard}.log",
    benchmark:
        OUT / "benchmarks/ecg/shard_{shard}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=240,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/ecg_shard.py"


rule ecg_collect:
    input:
        plan=OUT / "ecg/plan.parquet",
        measured=ecg_shard_outputs("measured"),
        exclusions=ecg_shard_outputs("exclusions"),
        code=library_code("ecg_collect.py"),
    output:
        index=OUT / "ecg/index.parquet",
        exclusions=OUT / "ecg/exclusions.parquet",
    params:
        # The thresholds apply here, to the shards' measurements (the rest of the block: see ecg_shard).
        settings=ecg_settings(),
    log:
        OUT / "logs/ecg/collect.log",
    benchmark:
        OUT / "benchmarks/ecg/collect.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/ecg_collect.py"
