# TGMM training (docs/MODEL.md): cached frozen-encoder features, then one job per task x modality subset.
# Checkpoints live under {out_dir}/train/{task}/{subset}/ (not declared outputs, so a job killed midway and
# started again resumes from its last epoch); predictions go to {out_dir}/eval/predictions/.


wildcard_constraints:
    subset="|".join(re.escape(s) for s in SUBSETS),


rule encoder_features:
    input:
        unpack(encoder_inputs),
        code=library_code("encoder_features.py"),
    output:
        OUT / "train/features.pt",
    params:
        out_dir=OUT,
        model=model_params(),
        batch_size=config["train"]["encode_batch_size"],
        cache_dir=OUT / "cache/features",
    log:
        OUT / "logs/train/encoder_features.log",
    benchmark:
        OUT / "benchmarks/train/encoder_features.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,  # minutes
        gpu=config["train"]["gpu"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/encoder_features.py"


rule train_model:
    input:
        unpack(training_inputs),
        code=library_code("train_model.py"),
    output:
        predictions=OUT / "eval/predictions/{task}/{subset}.parquet",
        summary=OUT / "train/{task}/{subset}/summary.json",
    wildcard_constraints:
        task="diagnosis|prognosis",
    params:
        out_dir=OUT,
        model=model_params(),
        optim=config["train"]["optim"],
        work_dir=lambda wildcards: OUT / f"train/{wildcards.task}/{wildcards.subset}",
    log:
        OUT / "logs/train/{task}/{subset}.log",
    benchmark:
        OUT / "benchmarks/train/{task}/{subset}.tsv"
    threads: config["train"]["threads"]
    resources:
        mem_mb=8000,
        runtime=lambda wildcards: 600 if wildcards.task == "prognosis" else 120,  # minutes
        gpu=config["train"]["gpu"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train_model.py"


rule train_retrieval:
    input:
        unpack(training_inputs),
        code=library_code("train_retrieval.py"),
    output:
        predictions=retrieval_prediction_files(),
        embeddings=OUT / "train/retrieval/embeddings.parquet",
        summary=OUT / "train/retrieval/summary.json",
    params:
        out_dir=OUT,
        model=model_params(),
        optim=config["train"]["optim"],
        subset=config["train"]["retrieval_subset"],
        pool=config["evaluate"]["retrieval_pool"],
        work_dir=OUT / f"train/retrieval/{config['train']['retrieval_subset']}",
    log:
        OUT / "logs/train/retrieval.log",
    benchmark:
        OUT / "benchmarks/train/retrieval.tsv"
    threads: config["train"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,  # minutes
        gpu=config["train"]["gpu"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train_retrieval.py"
