# Cohort and labels (docs/CURATION.md, Cohort and Labels). Every criterion reaches its rule through params:, so editing it in
# config.yaml reruns exactly the rules that depend on it.


rule lab_admissions:
    input:
        labevents=OUT / "parquet/labevents.parquet",
        code=library_code("lab_admissions.py", sql=["lab_admissions"]),
    output:
        OUT / "cohort/lab_admissions.parquet",
    params:
        lab_itemids=config["cohort"]["lab_itemids"],
    log:
        OUT / "logs/cohort/lab_admissions.log",
    benchmark:
        OUT / "benchmarks/cohort/lab_admissions.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/lab_admissions.py"


rule ecg_admissions:
    input:
        admissions=OUT / "parquet/admissions.parquet",
        records=OUT / "parquet/ecg_record_list.parquet",
        code=library_code("window_admissions.py", sql=["admission_windows", "ecg_admissions", "window_records"]),
    output:
        pairs=OUT / "cohort/ecg_admissions.parquet",
        places=OUT / "cohort/ecg_window.parquet",
    params:
        window=config["cohort"]["ecg_window"],
    log:
        OUT / "logs/cohort/ecg_admissions.log",
    benchmark:
        OUT / "benchmarks/cohort/ecg_admissions.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/window_admissions.py"


rule echo_admissions:
    input:
        admissions=OUT / "parquet/admissions.parquet",
        records=OUT / "parquet/echo_study_list.parquet",
        code=library_code("window_admissions.py", sql=["admission_windows", "echo_admissions", "window_records"]),
    output:
        pairs=OUT / "cohort/echo_admissions.parquet",
        places=OUT / "cohort/echo_window.parquet",
    params:
        window=config["cohort"]["echo_window"],
    log:
        OUT / "logs/cohort/echo_admissions.log",
    benchmark:
        OUT / "benchmarks/cohort/echo_admissions.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/window_admissions.py"


rule index_admissions:
    input:
        unpack(cohort_modality_inputs),
        admissions=OUT / "parquet/admissions.parquet",
        admission_exclusions=OUT / "parquet/admissions.exclusions.parquet",
        patients=OUT / "parquet/patients.parquet",
        code=library_code("index_admissions.py", sql=["admission_age", "admission_eligibility", "index_admission"]),
    output:
        index=OUT / "cohort/index_admissions.parquet",
        attrition=OUT / "cohort/attrition_eligibility.parquet",
        eligibility=OUT / "cohort/eligibility.parquet",
    params:
        min_age=config["cohort"]["min_age"],
        require_modalities=required_modalities(),
        order=config["cohort"]["index_admission"],
    log:
        OUT / "logs/cohort/index_admissions.log",
    benchmark:
        OUT / "benchmarks/cohort/index_admissions.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/index_admissions.py"


rule hf_admissions:
    input:
        diagnoses=OUT / "parquet/diagnoses_icd.parquet",
        code=library_code("hf_admissions.py", sql=["hf_admissions"]),
    output:
        OUT / "cohort/hf_admissions.parquet",
    params:
        codes=hf_code_lists(),
    log:
        OUT / "logs/cohort/hf_admissions.log",
    benchmark:
        OUT / "benchmarks/cohort/hf_admissions.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/hf_admissions.py"


rule prevalent_hf:
    input:
        index=OUT / "cohort/index_admissions.parquet",
        admissions=OUT / "parquet/admissions.parquet",
        hf=OUT / "cohort/hf_admissions.parquet",
        code=library_code("prevalent_hf.py", sql=["prevalent_hf"]),
    output:
        OUT / "cohort/prevalent_hf.parquet",
    params:
        lookback_days=config["labels"]["prevalent_lookback_days"],
    log:
        OUT / "logs/cohort/prevalent_hf.log",
    benchmark:
        OUT / "benchmarks/cohort/prevalent_hf.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/prevalent_hf.py"


rule followup:
    input:
        index=OUT / "cohort/index_admissions.parquet",
        prevalent=OUT / "cohort/prevalent_hf.parquet",
        admissions=OUT / "parquet/admissions.parquet",
        patients=OUT / "parquet/patients.parquet",
        hf=OUT / "cohort/hf_admissions.parquet",
        code=library_code("followup.py", sql=["followup"]),
    output:
        OUT / "cohort/followup.parquet",
    params:
        min_days=config["labels"]["followup_min_days"],
        censor_at_death=config["labels"]["censor_at_death"],
    log:
        OUT / "logs/cohort/followup.log",
    benchmark:
        OUT / "benchmarks/cohort/followup.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/followup.py"


rule cohort:
    input:
        index=OUT / "cohort/index_admissions.parquet",
        prevalent=OUT / "cohort/prevalent_hf.parquet",
        followup=OUT / "cohort/followup.parquet",
        attrition=OUT / "cohort/attrition_eligibility.parquet",
        code=library_code("cohort.py"),
    output:
        cohort=OUT / "cohort/cohort.parquet",
        attrition=OUT / "cohort/attrition.parquet",
    log:
        OUT / "logs/cohort/cohort.log",
    benchmark:
        OUT / "benchmarks/cohort/cohort.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/cohort.py"


rule attrition:
    input:
        unpack(attrition_stage_inputs),
        code=library_code("attrition.py"),
    output:
        attrition=OUT / "hftri/attrition.parquet",
        status=OUT / "cohort/patient_status.parquet",
    params:
        required=required_modalities(),
    log:
        OUT / "logs/attrition.log",
    benchmark:
        OUT / "benchmarks/attrition.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,  # minutes
    conda:
        "../../envs/curation.yaml"
    script:
        "../scripts/attrition.py"
