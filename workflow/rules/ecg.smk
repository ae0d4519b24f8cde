# ECG stage (docs/SIGNALS.md, ECG): a branch's records -> quality-checked (12, 2500) float32 arrays in Zarr v3 shards.
# Written once for every dataset (workflow/rules/branches.smk): MIMIC-IV's rules are ecg_plan, ecg_shard and
# ecg_collect under out_dir; PTB-XL's are ptbxl_ecg_plan, ... under out_dir/ptbxl.

for branch in BRANCHES:

    checkpoint:
        name:
            branch.rule("ecg_plan")
        input:
            cohort=branch.ecg_records,
            code=library_code("ecg_plan.py"),
        output:
            branch.root / "ecg/plan.parquet",
        params:
            shard_size=config["ecg"]["shard_size"],
        log:
            branch.log("ecg/plan.log"),
        benchmark:
            branch.benchmark("ecg/plan.tsv")
        threads: 1
        resources:
            mem_mb=1000,
            runtime=30,  # minutes
        conda:
            "../../envs/signals.yaml"
        script:
            "../scripts/ecg_plan.py"

    if branch.real:

        rule:
            name:
                branch.rule("ecg_files_check")
            input:
                plan=branch.root / "ecg/plan.parquet",
                code=library_code("source_files_check.py"),
            output:
                branch.root / "ecg/source_files.json",
            params:
                tree="ecg",
                root=branch.ecg_root,
                root_key=branch.ecg_root_key,
                policy=SOURCE["missing_files"],
                missing_list=branch.root / "ecg/missing_files.txt",
                downloads=cohort_download_stamp("ecg") if branch is MIMIC else None,
            log:
                branch.log("ecg/files_check.log"),
            benchmark:
                branch.benchmark("ecg/files_check.tsv")
            threads: 1
            resources:
                mem_mb=1000,
                runtime=30,  # minutes
            conda:
                "../../envs/curation.yaml"
            script:
                "../scripts/source_files_check.py"

    rule:
        name:
            branch.rule("ecg_shard")
        input:
            list(branch.ecg_tree_outputs),
            branch.ecg_files_check(),
            plan=branch.root / "ecg/plan.parquet",
            code=library_code("ecg_shard.py"),
        output:
            store=directory(branch.root / "ecg/shards/{shard}.zarr"),
            measured=branch.root / "ecg/shards/{shard}.measured.parquet",
            exclusions=branch.root / "ecg/shards/{shard}.exclusions.parquet",
        wildcard_constraints:
            shard=r"\d+",
        params:
            ecg_root=branch.ecg_root,
            settings=ecg_processing_settings(),
            missing_files=branch.missing_files(),
            zarr_relpath="ecg/shards/{shard}.zarr",  # relative to the branch's root, where its dataset lives
        log:
            branch.log("ecg/shard_{shard}.log"),
        benchmark:
            branch.benchmark("ecg/shard_{shard}.tsv")
        threads: 1
        resources:
            mem_mb=1500,
            runtime=240,  # minutes
        conda:
            "../../envs/signals.yaml"
        script:
            "../scripts/ecg_shard.py"

    rule:
        name:
            branch.rule("ecg_collect")
        input:
            plan=branch.root / "ecg/plan.parquet",
            measured=branch.ecg_shard_outputs("measured"),
            exclusions=branch.ecg_shard_outputs("exclusions"),
            code=library_code("ecg_collect.py"),
        output:
            index=branch.root / "ecg/index.parquet",
            exclusions=branch.root / "ecg/exclusions.parquet",
        params:
            # The thresholds apply here, to the shards' measurements (the rest of the block: see ecg_shard).
            settings=ecg_settings(),
        log:
            branch.log("ecg/collect.log"),
        benchmark:
            branch.benchmark("ecg/collect.tsv")
        threads: 1
        resources:
            mem_mb=1000,
            runtime=30,  # minutes
        conda:
            "../../envs/signals.yaml"
        script:
            "../scripts/ecg_collect.py"
