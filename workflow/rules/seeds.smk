# Training-seed spread (`snakemake seeds`, not part of `all`): the configured runs trained again with only
# train.optim.seed replaced (scenarios seeds/seed{N} of train_scenario, train.smk) on the same features and splits;
# eval/SEEDS.md puts them beside the reported run.


rule seed_table:
    input:
        unpack(seed_inputs),
        code=library_code("seed_table.py"),
    output:
        results=OUT / "eval/seeds.parquet",
        markdown=OUT / "eval/SEEDS.md",
    params:
        runs=seed_runs(),
        reference_seed=config["train"]["optim"]["seed"],
    log:
        OUT / "logs/eval/seeds.log",
    benchmark:
        OUT / "benchmarks/eval/seeds.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/seed_table.py"
