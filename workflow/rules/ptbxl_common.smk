# PTB-XL settings (workflow/rules/ptbxl.smk; its branch of the shared rules: branches.smk) and the real-source check.
PTB = OUT / "ptbxl"
PTBXL = config["ptbxl"]
PTBXL_DEMO = PTBXL["kind"] == "demo"


def ptbxl_root():
    """The demo tree the workflow writes, or the configured PTB-XL release."""
    return PTB / "source" if PTBXL_DEMO else Path(PTBXL["root"])


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
    from hftri_mimic.ptbxl.dataset import check_ptbxl_source  # here: pandas would slow every snakemake start

    try:
        check_ptbxl_source(PTBXL["root"])
    except ValueError as err:
        raise ValueError(f"config ptbxl.root: {err}") from None


check_ptbxl_config()
