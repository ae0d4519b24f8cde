# Evaluation (docs/MODEL.md): metrics with CIs per task from the saved predictions, figures, paper-style tables.


rule evaluate_diagnosis:
    input:
        predictions=expand(OUT / "eval/predictions/diagnosis/{subset}.parquet", subset=trained_subsets()),
        code=library_code("evaluate_diagnosis.py"),
    output:
        results=OUT / "eval/diagnosis.parquet",
        roc=report(
            OUT / "eval/figures/roc_diagnosis.png",
            caption="../report/roc.rst",
            category="2. TGMM results",
            labels={"figure": "ROC curves, diagnosis"},
        ),
    params:
        subsets=trained_subsets(),
        n_resamples=config["evaluate"]["bootstrap_resamples"],
        seed=config["evaluate"]["seed"],
        alpha=config["evaluate"]["alpha"],
    log:
        OUT / "logs/eval/diagnosis.log",
    benchmark:
        OUT / "benchmarks/eval/diagnosis.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/evaluate_diagnosis.py"


rule evaluate_prognosis:
    input:
        predictions=expand(OUT / "eval/predictions/prognosis/{subset}.parquet", subset=trained_subsets()),
        code=library_code("evaluate_prognosis.py"),
    output:
        results=OUT / "eval/prognosis.parquet",
        folds=OUT / "eval/prognosis_folds.parquet",
        km=[
            report(
                OUT / f"eval/figures/km_{subset}.png",
                caption="../report/km.rst",
                category="2. TGMM results",
                labels={"figure": f"Kaplan-Meier, {subset}"},
            )
            for subset in trained_subsets()
        ],
    params:
        subsets=trained_subsets(),
        threshold=config["evaluate"]["km_threshold"],
        repeat=config["evaluate"]["km_repeat"],
    log:
        OUT / "logs/eval/prognosis.log",
    benchmark:
        OUT / "benchmarks/eval/prognosis.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/evaluate_prognosis.py"


rule evaluate_retrieval:
    input:
        predictions=retrieval_prediction_files(),
        embeddings=OUT / "train/retrieval/embeddings.parquet",
        code=library_code("evaluate_retrieval.py"),
    output:
        results=OUT / "eval/retrieval.parquet",
        candidates=OUT / "eval/retrieval_candidates.parquet",
    params:
        n_resamples=config["evaluate"]["bootstrap_resamples"],
        seed=config["evaluate"]["seed"],
        alpha=config["evaluate"]["alpha"],
        pool=config["evaluate"]["retrieval_pool"],
        candidates=config["evaluate"]["retrieval_candidates"],
        candidate_draws=config["evaluate"]["retrieval_candidate_draws"],
    log:
        OUT / "logs/eval/retrieval.log",
    benchmark:
        OUT / "benchmarks/eval/retrieval.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/evaluate_retrieval.py"


rule results_tables:
    input:
        unpack(results_inputs),
        lock=REPO / "envs/requirements.lock",
        code=library_code("results_tables.py"),
    output:
        markdown=OUT / "eval/RESULTS.md",
        environment=OUT / "eval/environment.json",
        html=report(
            OUT / "eval/RESULTS.html",
            caption="../report/results_tables.rst",
            category="2. TGMM results",
            labels={"table": "Tables 2-3"},
        ),
    params:
        tasks=trained_tasks(),
        retrieval_subset=config["train"]["retrieval_subset"],
        retrieval_pool=config["evaluate"]["retrieval_pool"],
    log:
        OUT / "logs/eval/results_tables.log",
    benchmark:
        OUT / "benchmarks/eval/results_tables.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/results_tables.py"
