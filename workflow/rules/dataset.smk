# Dataset assembly (docs/CURATION.md, Dataset): EHR features, lab text, manifest, splits, datasheet -> results/hftri/.


rule lab_values:
    input:
        index=OUT / "cohort/index_admissions.parquet",
        labevents=OUT / "parquet/labevents.parquet",
        d_labitems=OUT / "parquet/d_labitems.parquet",
        code=library_code("lab_values.py", sql=["lab_candidates", "lab_values"]),
    output:
        values=OUT / "dataset/lab_values.parquet",
        exclusions=OUT / "dataset/lab_values.exclusions.parquet",
    params:
        lab_itemids=config["cohort"]["lab_itemids"],
        reference=config["dataset"]["reference_time"],
        storetime_before_reference=config["dataset"]["lab_storetime_before_reference"],
    log:
        OUT / "logs/dataset/lab_values.log",
    benchmark:
        OUT / "benchmarks/dataset/lab_values.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/lab_values.py"


rule omr_measures:
    input:
        index=OUT / "cohort/index_admissions.parquet",
        omr=OUT / "parquet/omr.parquet",
        code=library_code("omr_measures.py", sql=["omr_measures"]),
    output:
        OUT / "dataset/omr_measures.parquet",
    log:
        OUT / "logs/dataset/omr_measures.log",
    benchmark:
        OUT / "benchmarks/dataset/omr_measures.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/omr_measures.py"


rule history_groups:
    input:
        index=OUT / "cohort/index_admissions.parquet",
        admissions=OUT / "parquet/admissions.parquet",
        diagnoses=OUT / "parquet/diagnoses_icd.parquet",
        code=library_code("history_groups.py", sql=["history_groups"]),
    output:
        OUT / "dataset/history.parquet",
    params:
        groups=config["dataset"]["history_groups"],
        include_index_admission=config["dataset"]["history_include_index_admission"],
    log:
        OUT / "logs/dataset/history_groups.log",
    benchmark:
        OUT / "benchmarks/dataset/history_groups.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/history_groups.py"


rule drug_classes:
    input:
        index=OUT / "cohort/index_admissions.parquet",
        prescriptions=OUT / "parquet/prescriptions.parquet",
        code=library_code("drug_classes.py", sql=["drug_classes"]),
    output:
        OUT / "dataset/drugs.parquet",
    params:
        classes=config["dataset"]["drug_classes"],
        reference=config["dataset"]["reference_time"],
        before_admission=config["dataset"]["drugs_before_admission"],
    log:
        OUT / "logs/dataset/drug_classes.log",
    benchmark:
        OUT / "benchmarks/dataset/drug_classes.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/drug_classes.py"


rule manifest:
    input:
        unpack(manifest_inputs),
        code=library_code("manifest.py"),
    output:
        OUT / "hftri/manifest.parquet",
    params:
        required=required_modalities(),
    log:
        OUT / "logs/dataset/manifest.log",
    benchmark:
        OUT / "benchmarks/dataset/manifest.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/manifest.py"


rule lab_text:
    input:
        # Every index patient (the manifest decides who stays): a label criterion never reruns the text.
        patients=OUT / "cohort/index_admissions.parquet",
        lab_values=OUT / "dataset/lab_values.parquet",
        measures=OUT / "dataset/omr_measures.parquet",
        history=OUT / "dataset/history.parquet",
        drugs=OUT / "dataset/drugs.parquet",
        code=library_code("lab_text.py"),
    output:
        labs=OUT / "dataset/labs.parquet",
        texts=OUT / "dataset/text_raw.parquet",
    params:
        lab_itemids=config["cohort"]["lab_itemids"],
        history_order=list(config["dataset"]["history_groups"]),
        drug_order=list(config["dataset"]["drug_classes"]),
    log:
        OUT / "logs/dataset/lab_text.log",
    benchmark:
        OUT / "benchmarks/dataset/lab_text.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/lab_text.py"


# The demo vocabulary and the token ids, written once for every dataset (workflow/rules/branches.smk): MIMIC-IV's
# demo_tokenizer and text_tokens, PTB-XL's ptbxl_demo_tokenizer and ptbxl_text_tokens.
for branch in BRANCHES:

    rule:
        name:
            branch.rule("demo_tokenizer")
        input:
            texts=branch.root / "dataset/text_raw.parquet",
            code=library_code("demo_tokenizer.py"),
        output:
            branch.root / "text/tokenizer/vocab.txt",
        params:
            vocab_size=config["dataset"]["text"]["demo_vocab_size"],
            lowercase=config["dataset"]["text"]["lowercase"],
            task_texts=branch.task_texts(),
        log:
            branch.log("dataset/demo_tokenizer.log"),
        benchmark:
            branch.benchmark("dataset/demo_tokenizer.tsv")
        threads: 1
        resources:
            mem_mb=1000,
            runtime=30,  # minutes
        conda:
            "../../envs/curation.yaml"
        script:
            "../scripts/demo_tokenizer.py"

    rule:
        name:
            branch.rule("text_tokens")
        input:
            texts=branch.root / "dataset/text_raw.parquet",
            vocab=branch.tokenizer_folder() / "vocab.txt",
            # the dataset's tables hold the manifest's patients only (the text and tokenizer may cover more)
            manifest=branch.root / "hftri/manifest.parquet",
            labs=branch.root / "dataset/labs.parquet",
            code=library_code("text_tokens.py"),
        output:
            text=branch.root / "hftri/text.parquet",
            labs=branch.root / "hftri/labs.parquet",
        params:
            lowercase=config["dataset"]["text"]["lowercase"],
            max_tokens=config["dataset"]["text"]["max_tokens"],
            on_overflow=config["dataset"]["text"]["on_overflow"],
        log:
            branch.log("dataset/text_tokens.log"),
        benchmark:
            branch.benchmark("dataset/text_tokens.tsv")
        threads: 1
        resources:
            mem_mb=1000,
            runtime=30,  # minutes
        conda:
            "../../envs/curation.yaml"
        script:
            "../scripts/text_tokens.py"


rule splits:
    input:
        manifest=OUT / "hftri/manifest.parquet",
        code=library_code("splits.py"),
    output:
        OUT / "hftri/splits.parquet",
    params:
        splits=config["dataset"]["splits"],
    log:
        OUT / "logs/dataset/splits.log",
    benchmark:
        OUT / "benchmarks/dataset/splits.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/splits.py"


rule training_views:
    input:
        manifest=OUT / "hftri/manifest.parquet",
        splits=OUT / "hftri/splits.parquet",
        code=library_code("training_views.py"),
    output:
        inputs=OUT / "train/data/inputs.parquet",
        diagnosis=OUT / "train/data/diagnosis.parquet",
        prognosis=OUT / "train/data/prognosis.parquet",
    log:
        OUT / "logs/dataset/training_views.log",
    benchmark:
        OUT / "benchmarks/dataset/training_views.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/training_views.py"


rule datasheet:
    input:
        unpack(datasheet_inputs),
        code=library_code("datasheet.py"),
    output:
        sheet=OUT / "hftri/DATASHEET.md",
        figures=report(
            directory(OUT / "hftri/figures"),
            patterns=["{name}.png"],
            caption="../report/dataset_figures.rst",
            category="1. Cohort and dataset",
            labels={"figure": "{name}"},
        ),
    log:
        OUT / "logs/dataset/datasheet.log",
    benchmark:
        OUT / "benchmarks/dataset/datasheet.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/datasheet.py"
