# TGMM training (docs/MODEL.md): cached frozen-encoder features, then one job per task x modality subset.
# Checkpoints live under {out_dir}/train/{task}/{subset}/ (not declared outputs, so a job killed midway and
# started again resumes from its last epoch); predictions go to {out_dir}/eval/predictions/.


wildcard_constraints:
    subset="|".join(re.escape(s) for s in SUBSETS),


# Written once for every dataset (workflow/rules/branches.smk): MIMIC-IV's encoder_features and train_model, PTB-XL's
# ptbxl_encoder_features and ptbxl_train_model.
for branch in BRANCHES:

    rule:
        name:
            branch.rule("encoder_features")
        input:
            unpack(branch.encoder_inputs),
            code=library_code("encoder_features.py"),
        output:
            branch.root / "train/features.pt",
        params:
            out_dir=branch.root,
            model=branch.model_params(),
            batch_size=config["train"]["encode_batch_size"],
            cache_dir=branch.root / "cache/features",
        log:
            branch.log("train/encoder_features.log"),
        benchmark:
            branch.benchmark("train/encoder_features.tsv")
        threads: 2
        resources:
            mem_mb=8000,
            runtime=240,  # minutes
            gpu=config["train"]["gpu"],
        conda:
            "../../envs/train.yaml"
        script:
            "../scripts/encoder_features.py"

    rule:
        name:
            branch.rule("train_model")
        input:
            unpack(branch.training_inputs),
            code=library_code("train_model.py"),
        output:
            predictions=branch.root / "eval/predictions/{task}/{subset}.parquet",
            summary=branch.root / "train/{task}/{subset}/summary.json",
        wildcard_constraints:
            task="|".join(branch.tasks),
        params:
            out_dir=branch.root,
            model=branch.model_params(),
            optim=config["train"]["optim"],
            work_dir=branch.train_work_dir,
        log:
            branch.log("train/{task}/{subset}.log"),
        benchmark:
            branch.benchmark("train/{task}/{subset}.tsv")
        threads: config["train"]["threads"]
        resources:
            mem_mb=8000,
            runtime=lambda wildcards: 600 if wildcards.task == "prognosis" else 120,  # minutes
            gpu=config["train"]["gpu"],
        conda:
            "../../envs/train.yaml"
        script:
            "../scripts/train_model.py"


# Scenarios of the reported run (branches.smk): a compare variant (compare/{variant}: its model keys replaced) or a
# seed run (seeds/seed{N}: train.optim.seed replaced), trained by train_model's script on the same features and
# splits, under eval/{kind}/predictions/{name}/ and train/{kind}/{name}/.
use rule train_model as train_scenario with:
    output:
        predictions=OUT / "eval/{kind}/predictions/{name}/{task}/{subset}.parquet",
        summary=OUT / "train/{kind}/{name}/{task}/{subset}/summary.json",
    wildcard_constraints:
        kind="|".join(SCENARIO_KINDS),
        name=scenario_name_pattern(),
        task="diagnosis|prognosis",
    params:
        out_dir=OUT,
        model=scenario_model,
        optim=scenario_optim,
        work_dir=scenario_work_dir,
    log:
        OUT / "logs/train/{kind}/{name}/{task}/{subset}.log",
    benchmark:
        OUT / "benchmarks/train/{kind}/{name}/{task}/{subset}.tsv"


rule train_retrieval:
    input:
        unpack(MIMIC.training_inputs),
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
