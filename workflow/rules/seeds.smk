# Training-seed spread (`snakemake seeds`, not part of `all`): the configured runs trained again with only
# train.optim.seed replaced, by the same script, features and splits; eval/SEEDS.md puts them beside the reported run.


# A seed run is train_model's with another optimiser seed and its own paths.
use rule train_model as train_seed with:
    output:
        predictions=OUT / "eval/seeds/predictions/seed{seed}/{task}/{subset}.parquet",
        summary=OUT / "train/seeds/seed{seed}/{task}/{subset}/summary.json",
    wildcard_constraints:
        task="diagnosis|prognosis",
        seed=r"\d+",
    params:
        out_dir=OUT,
        model=model_params(),
        optim=lambda wildcards: {**config["train"]["optim"], "seed": int(wildcards.seed)},
        work_dir=lambda wildcards: OUT / f"train/seeds/seed{wildcards.seed}/{wildcards.task}/{wildcards.subset}",
    log:
        OUT / "logs/train/seeds/seed{seed}/{task}/{subset}.log",
    benchmark:
        OUT / "benchmarks/train/seeds/seed{seed}/{task}/{subset}.tsv"


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
