# External validation on PTB-XL (paper §5.2, Table 4; hftri_mimic/ptbxl/dataset.py): myocardial infarction vs normal
# from patient metadata as text ("Lab") and the 12-lead ECG. Target: `snakemake --cores 2 ptbxl` (not part of `all`).
# Everything goes under {out_dir}/ptbxl/, whose hftri/ folder has the HFTri dataset layout: the ECG stage, the
# tokenizer and token ids, encoder caching and TGMM training are the shared rules of the PTB-XL branch
# (workflow/rules/branches.smk: ptbxl_ecg_plan, ptbxl_ecg_shard, ptbxl_ecg_collect, ptbxl_demo_tokenizer,
# ptbxl_text_tokens, ptbxl_encoder_features, ptbxl_train_model). This file holds what only PTB-XL has.
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


rule ptbxl_dataset:
    input:
        records=PTB / "labels/records.parquet",
        label_exclusions=PTB / "labels/exclusions.parquet",
        ecg_index=PTB / "ecg/index.parquet",
        ecg_exclusions=PTB / "ecg/exclusions.parquet",
        code=library_code("ptbxl_dataset.py"),
    output:
        manifest=PTB / "hftri/manifest.parquet",
        labs=PTB / "dataset/labs.parquet",  # ptbxl_text_tokens keeps the manifest's
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
