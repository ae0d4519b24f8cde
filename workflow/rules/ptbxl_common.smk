# Helpers of the PTB-XL branch (workflow/rules/ptbxl.smk): paths, model settings, the real-source check.
import copy

PTB = OUT / "ptbxl"
PTBXL = config["ptbxl"]
PTBXL_DEMO = PTBXL["kind"] == "demo"


def ptbxl_root():
    """The demo tree the workflow writes, or the configured PTB-XL release."""
    return PTB / "source" if PTBXL_DEMO else Path(PTBXL["root"])


def ptbxl_record_files(wildcards):
    """The demo's record folder is a rule output (a new demo reruns the shards); a real release is external."""
    return [PTB / f"source/{PTBXL['records']}"] if PTBXL_DEMO else []


def ptbxl_tokenizer_folder():
    folder = config["dataset"]["text"]["tokenizer"]
    return Path(folder) if folder else PTB / "text/tokenizer"


def ptbxl_model_params():
    """config["model"] with this task's prompt and answers (diagnosis slot) and the PTB-XL vocabulary."""
    model = copy.deepcopy(config["model"])
    if not model["text"].get("folder"):
        model["text"]["vocab"] = str(ptbxl_tokenizer_folder())
    tgmm = model["tgmm"]
    tgmm["prompts"] = {**tgmm.get("prompts", {}), "diagnosis": PTBXL["prompt"]}
    tgmm["candidates"] = {**tgmm.get("candidates", {}), "diagnosis": list(PTBXL["candidates"])}
    return model


def ptbxl_ecg_shard_outputs(kind):
    def inputs(wildcards):
        plan = checkpoints.ptbxl_ecg_plan.get().output[0]
        return [PTB / f"ecg/shards/{k}.{kind}.parquet" for k in shard_ids(plan)]

    return inputs


def ptbxl_training_inputs(wildcards):
    inputs = {name: PTB / f"hftri/{name}.parquet" for name in ("manifest", "text", "splits")}
    inputs["vocab"] = ptbxl_tokenizer_folder() / "vocab.txt"
    inputs["ecg"] = PTB / "ecg/index.parquet"
    return inputs


def ptbxl_train_inputs(wildcards):
    inputs = ptbxl_training_inputs(wildcards)
    if features_cached():
        inputs["features"] = PTB / "train/features.pt"
    return inputs


def check_ptbxl_config():
    """Cross-key checks the schema cannot express, and the real release's layout, before any job runs."""
    seen = {}
    for split, folds in PTBXL["folds"].items():
        for fold in folds:
            if fold in seen:
                raise ValueError(f"config ptbxl.folds: strat_fold {fold} is in both {seen[fold]} and {split}")
            seen[fold] = split
    if PTBXL["records"] == "records100" and config["ecg"]["min_fs"] > 100:
        raise ValueError(
            f"config ptbxl.records: records100 are sampled at 100 Hz, below ecg.min_fs ({config['ecg']['min_fs']}); "
            "use records500 or lower ecg.min_fs"
        )
    if PTBXL_DEMO:
        return
    if not PTBXL["root"]:
        raise ValueError("config ptbxl.root: required when ptbxl.kind is 'real' (the PTB-XL release folder)")
    from hftri_mimic.ptbxl import check_ptbxl_source  # here: pandas would slow every snakemake start

    try:
        check_ptbxl_source(PTBXL["root"])
    except ValueError as err:
        raise ValueError(f"config ptbxl.root: {err}") from None


check_ptbxl_config()
