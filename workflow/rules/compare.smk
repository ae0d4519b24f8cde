# Baselines and ablations (docs/MODEL.md, paper Tables 5-6, Fig. 7): `snakemake compare`. Each configured variant is the
# model of config.yaml with the variant's `model` keys replaced, a scenario trained by train_scenario (train.smk) with
# the same features, splits and optimiser as TGMM; the comparison pairs it with TGMM's predictions on the same
# patients (models/evaluation/compare.py).


rule compare_tables:
    input:
        unpack(compare_inputs),
        code=library_code("compare_tables.py"),
    output:
        results=OUT / "eval/compare.parquet",
        markdown=OUT / "eval/COMPARE.md",
        html=report(
            OUT / "eval/COMPARE.html",
            caption="../report/compare_tables.rst",
            category="3. Baselines and ablations",
            labels={"table": "Tables 5-6, Fig. 7"},
        ),
        figures=[
            report(
                OUT / f"eval/figures/compare_{table}.png",
                caption="../report/compare_figures.rst",
                category="3. Baselines and ablations",
                labels={"figure": table},
            )
            for table in compare_tables_present()
        ],
    params:
        runs=variant_runs(),
        tables=compare_tables_present(),
        n_resamples=config["evaluate"]["bootstrap_resamples"],
        seed=config["evaluate"]["seed"],
        alpha=config["evaluate"]["alpha"],
    log:
        OUT / "logs/eval/compare.log",
    benchmark:
        OUT / "benchmarks/eval/compare.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/compare_tables.py"
