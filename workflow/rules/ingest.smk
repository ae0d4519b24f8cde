# Ingest (docs/CURATION.md, Ingest): each needed source table -> Parquet, once, by DuckDB. Rows that cannot be read or fail a
# row check are excluded with a named reason into {table}.exclusions.parquet (docs/FAULTS.md: in = kept + excluded).


rule ingest_table:
    input:
        source=ingest_source_file,
        code=library_code("ingest_table.py"),
    output:
        table=OUT / "parquet/{table}.parquet",
        exclusions=OUT / "parquet/{table}.exclusions.parquet",
    wildcard_constraints:
        table="|".join(TABLES),
    params:
        columns=config["ingest"]["columns"],
        max_rejected_share=config["ingest"]["max_rejected_share"],
    log:
        OUT / "logs/ingest/{table}.log",
    benchmark:
        OUT / "benchmarks/ingest/{table}.tsv"
    threads: lambda wildcards: ingest_threads(wildcards.table)
    resources:
        mem_mb=6000,
        runtime=120,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/ingest_table.py"
