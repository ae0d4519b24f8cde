# Helpers shared by the workflow: paths, source layout, derived criteria.
# Job scripts import the hftri_mimic library: installed with `pip install -e .` (README), and into each
# conda environment by its env file (envs/*.yaml install this checkout with pip).
from pathlib import Path

from hftri_mimic.ingest import ECG_TABLES, ECHO_TABLES, HOSP_TABLES, TABLES, SourceError, check_source_table
from hftri_mimic.storage import shard_ids

REPO = Path(workflow.basedir)
OUT = Path(config["out_dir"])
SOURCE = config["source"]
IS_DEMO = SOURCE["kind"] == "demo"


def source_roots():
    """Where the raw trees are: the demo's output folder or the configured download."""
    if IS_DEMO:
        return {"hosp": OUT / "source/hosp", "ecg": OUT / "source/ecg", "echo": OUT / "source/echo"}
    return {
        kind: Path(SOURCE[f"{kind}_root"]) if SOURCE.get(f"{kind}_root") else None
        for kind in ("hosp", "ecg", "echo")
    }


def source_tree(table):
    if table in ECG_TABLES:
        return "ecg"
    if table in ECHO_TABLES:
        return "echo"
    return "hosp"


def source_file(table):
    return source_roots()[source_tree(table)] / TABLES[table].relpath


def check_real_source():
    """Fail before any job runs when a configured real source is incomplete (names key, file, layout)."""
    roots = source_roots()
    if roots["hosp"] is None:
        raise ValueError("config source.hosp_root: required when source.kind is 'mimic'")
    for kind, root in roots.items():
        if root is not None and not root.is_dir():
            raise ValueError(f"config source.{kind}_root: {root} is not a directory")
    for table in TABLES:
        if roots[source_tree(table)] is not None:
            try:
                check_source_table(table, source_file(table))
            except SourceError as err:
                raise ValueError(f"config source.{source_tree(table)}_root: {err}") from None


def available_modalities():
    roots = source_roots()
    return ["labs"] + [m for m in ("ecg", "echo") if roots[m] is not None]


def required_modalities():
    """The configured modalities that the source has (SPEC §3: absent roots are not required)."""
    return [m for m in config["cohort"]["require_modalities"] if m in available_modalities()]


def hf_code_lists():
    """The ICD-9 and ICD-10 heart-failure code patterns of the configured definition."""
    lists = config["labels"]["hf_code_lists"][config["labels"]["hf_codes"]]
    return {"icd9": list(lists["icd9"]), "icd10": list(lists["icd10"])}


def cohort_modality_inputs(wildcards):
    """Availability tables of the modalities the source has."""
    inputs = {"lab_admissions": OUT / "cohort/lab_admissions.parquet"}
    if "ecg" in available_modalities():
        inputs["ecg_admissions"] = OUT / "cohort/ecg_admissions.parquet"
    if "echo" in available_modalities():
        inputs["echo_admissions"] = OUT / "cohort/echo_admissions.parquet"
    return inputs


def demo_params():
    demo = dict(config["demo"])
    demo["echo_frames"] = list(demo["echo_frames"])
    return demo


if not IS_DEMO:
    check_real_source()


def ecg_source_files(wildcards):
    """The demo's ECG files are a rule output (a change reruns the shards); a real tree is external."""
    return [OUT / "source/ecg/files"] if IS_DEMO else []


def ecg_settings():
    """The ecg block without the shard size (which changes the plan, not the per-record processing)."""
    return {k: v for k, v in config["ecg"].items() if k != "shard_size"}


def ecg_shard_outputs(kind):
    """Per-shard tables of every ECG shard in the plan (evaluated after the checkpoint ran)."""

    def inputs(wildcards):
        plan = checkpoints.ecg_shard_plan.get().output[0]
        return [OUT / f"ecg/shards/{k}.{kind}.parquet" for k in shard_ids(plan)]

    return inputs


def attrition_stage_inputs(wildcards):
    inputs = {"attrition": OUT / "cohort/attrition.parquet"}
    if "ecg" in available_modalities():
        inputs["ecg_exclusions"] = OUT / "ecg/exclusions.parquet"
    return inputs


def ecg_outputs():
    if "ecg" not in available_modalities():
        return []
    return [OUT / "ecg/index.parquet", OUT / "ecg/exclusions.parquet"]
