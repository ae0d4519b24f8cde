# External validation on PTB-XL (paper §5.2, Table 4; hftri_mimic/ptbxl.py): myocardial infarction vs normal from
# patient metadata as text ("Lab") and the 12-lead ECG. Target: `snakemake --cores 2 ptbxl` (not part of `all`).
# Everything goes under {out_dir}/ptbxl/, whose hftri/ folder has the HFTri dataset layout: the ECG stage, the text
# tokens, encoder caching and TGMM training run on it through the same scripts as the MIMIC branch.
include: "ptbxl_common.smk"


rule ptbxl:
    # Table 4 for PTB-XL: {out_dir}/ptbxl/eval/TABLE4.md
    input:
        PTB / "eval/TABLE4.md",
        PTB / "eval/diagnosis.parquet",
        PTB / "eval/environment.json",
        PTB / "hftri/attrition.parquet",


rule ptbxl_demo_source:
    input:
        code=library_code("ptbxl_demo_source.py"),
    output:
        database=PTB / "source/ptbxl_database.csv",
        statements=PTB / "source/scp_statements.csv",
        records500=directory(PTB / "source/records500"),
        records100=directory(PTB / "source/records100"),
        truth=PTB / "source_truth/records.parquet",
    params:
        demo=PTBXL["demo"],
    log:
        OUT / "logs/ptbxl/demo_source.log",
    benchmark:
        OUT / "benchmarks/ptbxl/demo_source.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/ptbxl_demo_source.py"


rule ptbxl_labels:
    input:
        database=ptbxl_root() / "ptbxl_database.csv",
        statements=ptbxl_root() / "scp_statements.csv",
        code=library_code("ptbxl_labels.py"),
    output:
        records=PTB / "labels/records.parquet",
        exclusions=PTB / "labels/exclusions.parquet",
    params:
        min_likelihood=PTBXL["min_likelihood"],
        folds=PTBXL["folds"],
        records=PTBXL["records"],
        norm_only=PTBXL["norm_only"],
    log:
        OUT / "logs/ptbxl/labels.log",
    benchmark:
        OUT / "benchmarks/ptbxl/labels.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/ptbxl_labels.py"


checkpoint ptbxl_ecg_plan:
    input:
        cohort=PTB / "labels/records.parquet",
        code=library_code("ecg_plan.py"),
    output:
        PTB / "ecg/plan.parquet",
    params:
        shard_size=config["ecg"]["shard_size"],
    log:
        OUT / "logs/ptbxl/ecg_plan.log",
    benchmark:
        OUT / "benchmarks/ptbxl/ecg_plan.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/ecg_plan.py"


rule ptbxl_ecg_shard:
    input:
        ptbxl_record_files,
        plan=PTB / "ecg/plan.parquet",
        code=library_code("ecg_shard.py"),
    output:
        store=directory(PTB / "ecg/shards/{shard}.zarr"),
        measured=PTB / "ecg/shards/{shard}.measured.parquet",
        exclusions=PTB / "ecg/shards/{shard}.exclusions.parquet",
    wildcard_constraints:
        shard=r"\d+",
    params:
        ecg_root=ptbxl_root(),
        settings=ecg_processing_settings(),
        zarr_relpath="ecg/shards/{shard}.zarr",  # relative to {out_dir}/ptbxl, the dataset's root
    log:
        OUT / "logs/ptbxl/ecg_shard_{shard}.log",
    benchmark:
        OUT / "benchmarks/ptbxl/ecg_shard_{shard}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=240,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/ecg_shard.py"


rule ptbxl_ecg_collect:
    input:
        plan=PTB / "ecg/plan.parquet",
        measured=ptbxl_ecg_shard_outputs("measured"),
        exclusions=ptbxl_ecg_shard_outputs("exclusions"),
        code=library_code("ecg_collect.py"),
    output:
        index=PTB / "ecg/index.parquet",
        exclusions=PTB / "ecg/exclusions.parquet",
    params:
        settings=ecg_settings(),  # the thresholds apply here, to the shards' measurements
    log:
        OUT / "logs/ptbxl/ecg_collect.log",
    benchmark:
        OUT / "benchmarks/ptbxl/ecg_collect.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/signals.yaml"
    script:
        "../scripts/ecg_collect.py"


rule ptbxl_dataset:
    input:
        records=PTB / "labels/records.parquet",
        label_exclusions=PTB / "labels/exclusions.parquet",
        ecg_index=PTB / "ecg/index.parquet",
        ecg_exclusions=PTB / "ecg/exclusions.parquet",
        code=library_code("ptbxl_dataset.py"),
    output:
        manifest=PTB / "hftri/manifest.parquet",
        labs=PTB / "hftri/labs.parquet",
        text=PTB / "dataset/text_raw.parquet",
        splits=PTB / "hftri/splits.parquet",
        attrition=PTB / "hftri/attrition.parquet",
    log:
        OUT / "logs/ptbxl/dataset.log",
    benchmark:
        OUT / "benchmarks/ptbxl/dataset.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/ptbxl_dataset.py"


rule ptbxl_tokenizer:
    input:
        texts=PTB / "dataset/text_raw.parquet",
        code=library_code("ptbxl_tokenizer.py"),
    output:
        PTB / "text/tokenizer/vocab.txt",
    params:
        vocab_size=config["dataset"]["text"]["demo_vocab_size"],
        lowercase=config["dataset"]["text"]["lowercase"],
        task_texts=[PTBXL["prompt"], *PTBXL["candidates"]],
    log:
        OUT / "logs/ptbxl/tokenizer.log",
    benchmark:
        OUT / "benchmarks/ptbxl/tokenizer.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/ptbxl_tokenizer.py"


rule ptbxl_text_tokens:
    input:
        texts=PTB / "dataset/text_raw.parquet",
        vocab=ptbxl_tokenizer_folder() / "vocab.txt",
        code=library_code("text_tokens.py"),
    output:
        text=PTB / "hftri/text.parquet",
    params:
        lowercase=config["dataset"]["text"]["lowercase"],
        max_tokens=config["dataset"]["text"]["max_tokens"],
        on_overflow=config["dataset"]["text"]["on_overflow"],
    log:
        OUT / "logs/ptbxl/text_tokens.log",
    benchmark:
        OUT / "benchmarks/ptbxl/text_tokens.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/text_tokens.py"


rule ptbxl_encoder_features:
    input:
        unpack(ptbxl_training_inputs),
        code=library_code("encoder_features.py"),
    output:
        PTB / "train/features.pt",
    params:
        out_dir=PTB,
        model=ptbxl_model_params(),
        batch_size=config["train"]["encode_batch_size"],
        cache_dir=PTB / "cache/features",
    log:
        OUT / "logs/ptbxl/encoder_features.log",
    benchmark:
        OUT / "benchmarks/ptbxl/encoder_features.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,  # minutes
        gpu=config["train"]["gpu"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/encoder_features.py"


rule ptbxl_train:
    input:
        unpack(ptbxl_train_inputs),
        code=library_code("train_model.py"),
    output:
        predictions=PTB / "eval/predictions/{task}/{subset}.parquet",
        summary=PTB / "train/{task}/{subset}/summary.json",
    wildcard_constraints:
        task="diagnosis",
    params:
        out_dir=PTB,
        model=ptbxl_model_params(),
        optim=config["train"]["optim"],
        work_dir=lambda wildcards: PTB / f"train/{wildcards.task}/{wildcards.subset}",
    log:
        OUT / "logs/ptbxl/train/{task}/{subset}.log",
    benchmark:
        OUT / "benchmarks/ptbxl/train/{task}/{subset}.tsv"
    threads: config["train"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,  # minutes
        gpu=config["train"]["gpu"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train_model.py"


rule ptbxl_evaluate:
    input:
        predictions=expand(PTB / "eval/predictions/diagnosis/{subset}.parquet", subset=PTBXL["subsets"]),
        manifest=PTB / "hftri/manifest.parquet",
        lock=REPO / "envs/requirements.lock",
        code=library_code("ptbxl_evaluate.py"),
    output:
        results=PTB / "eval/diagnosis.parquet",
        environment=PTB / "eval/environment.json",
        roc=report(
            PTB / "eval/figures/roc.png",
            caption="../report/ptbxl_roc.rst",
            category="5. External validation (PTB-XL)",
            labels={"figure": "ROC curves, MI vs normal"},
        ),
        table=PTB / "eval/TABLE4.md",
        html=report(
            PTB / "eval/TABLE4.html",
            caption="../report/ptbxl_table.rst",
            category="5. External validation (PTB-XL)",
            labels={"table": "Table 4"},
        ),
    params:
        subsets=PTBXL["subsets"],
        n_resamples=config["evaluate"]["bootstrap_resamples"],
        seed=config["evaluate"]["seed"],
        alpha=config["evaluate"]["alpha"],
        source="PTB-XL demo (synthetic)" if PTBXL_DEMO else f"PTB-XL ({PTBXL['records']})",
        min_likelihood=PTBXL["min_likelihood"],
    log:
        OUT / "logs/ptbxl/evaluate.log",
    benchmark:
        OUT / "benchmarks/ptbxl/evaluate.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/ptbxl_evaluate.py"
