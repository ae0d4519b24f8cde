# The demo source (docs/CURATION.md, Sources): the three PhysioNet trees plus ground truth, when source.kind is demo.
DEMO_SOURCE_FILES = [OUT / f"source/hosp/{t}.csv.gz" for t in HOSP_TABLES] + [
    OUT / "source/ecg/record_list.csv",
    OUT / "source/ecg/machine_measurements.csv",
    OUT / "source/echo/echo-record-list.csv",
    OUT / "source/echo/echo-study-list.csv",
]


rule demo_source:
    input:
        code=library_code("demo_source.py"),
    output:
        DEMO_SOURCE_FILES,
        ecg_files=directory(OUT / "source/ecg/files"),
        echo_files=directory(OUT / "source/echo/files"),
        truth=directory(OUT / "source_truth"),
    params:
        demo=demo_params(),
        source_dir=OUT / "source",
    log:
        OUT / "logs/demo_source.log",
    benchmark:
        OUT / "benchmarks/demo_source.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/demo_source.py"
