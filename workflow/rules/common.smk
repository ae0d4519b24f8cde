# Helpers shared by the workflow: paths, source layout, derived criteria.
# Job scripts import the hftri_mimic library: installed with `pip install -e .` (README), and into each
# conda environment by its env file (envs/*.yaml install this checkout with pip).
import copy
import functools
import json
import re
from pathlib import Path

from models.config import DIRECTIONS, SUBSETS, direction_name  # plain Python, no torch
from hftri_mimic.ingest.tables import HOSP_TABLES, TABLES, SourceError, check_source_table
from hftri_mimic.ingest.tables import source_roots as tables_source_roots, source_tree
from hftri_mimic.ingest.download import cohort_projects, project_settings
from hftri_mimic.common.db import shard_ids
from hftri_mimic.common.privacy import close_folders, group_id, set_umask
from hftri_mimic.common.numerics import use_portable_cpu_numerics
from hftri_mimic.common.rule_code import rule_code

# The same numbers on every x86-64 machine: torch's CPU kernels capped at AVX2 in every job, which inherits this
# environment (HFTRI_CPU_NUMERICS=native lifts it; hftri_mimic/common/numerics.py, docs/RESULTS.md).
use_portable_cpu_numerics()

# Snakemake compares params by repr(), which keeps dict insertion order: a config.yaml re-saved with its keys in
# another order would rerun every rule. Sorting the keys once here makes params depend on values only, except where
# the order is content (history groups and drug classes appear in the lab text in config order).
ORDERED_CONFIG_KEYS = {("dataset", "history_groups"), ("dataset", "drug_classes")}


def canonical_config(value, path=()):
    if isinstance(value, dict):
        items = value.items() if path in ORDERED_CONFIG_KEYS else sorted(value.items())
        return {key: canonical_config(item, (*path, key)) for key, item in items}
    if isinstance(value, list):
        return [canonical_config(item, path) for item in value]
    return value


config.update(canonical_config(dict(config)))

REPO = Path(workflow.basedir)
OUT = Path(config["out_dir"])


def library_code(script, sql=()):
    """Inputs `code=` of a rule: the files of hftri_mimic/ and models/ that its script imports and the SQL concepts
    it names, so that editing one reruns the rule and what depends on it (hftri_mimic/common/rule_code.py)."""
    return rule_code(REPO / "workflow/scripts" / script, sql, root=REPO)

# Outputs private to the user (or the configured group) from the first file on: every job inherits this umask, and
# a cluster job sets it again when it reads this file (hftri_mimic/common/privacy.py, docs/SECURITY.md).
PRIVACY = config["privacy"]
set_umask(PRIVACY["group_access"])
if PRIVACY["group"]:
    group_id(PRIVACY["group"])  # an unknown group fails here, before any job
SOURCE = config["source"]
IS_DEMO = SOURCE["kind"] == "demo"


def source_roots():
    """Where the raw trees are: the demo's output folder or the configured download."""
    return tables_source_roots(SOURCE, OUT)


# DuckDB parses a gzip CSV with about two threads (labevents at scale 0.1: 22 s with one, 12 s with two, 13 s with
# three), so the large tables take two; the small ones take one, so that two of them run side by side.
LARGE_TABLES = ("labevents", "prescriptions", "omr")


def ingest_threads(table):
    return 2 if table in LARGE_TABLES else 1


def source_file(table):
    return source_roots()[source_tree(table)] / TABLES[table].relpath


def ingest_source_file(wildcards):
    """Input of ingest_table: the source table, once the configured real source is checked (here rather than when the
    Snakefile is read, so that `snakemake download` runs before there is a source)."""
    if not IS_DEMO:
        check_real_source()
    return source_file(wildcards.table)


@functools.cache
def check_real_source():
    """Fail before any job runs when a configured real source is incomplete (names key, file, layout)."""
    roots = source_roots()
    if roots["hosp"] is None:
        raise ValueError("config source.hosp_root: required when source.kind is 'mimic'")
    for kind, root in roots.items():
        if root is not None and not root.is_dir():
            raise ValueError(
                f"config source.{kind}_root: {root} is not a directory (`snakemake download` fetches the tables and "
                "record lists there, docs/RUNNING.md)"
            )
    for table in TABLES:
        if roots[source_tree(table)] is not None:
            try:
                check_source_table(table, source_file(table))
            except SourceError as err:
                raise ValueError(f"config source.{source_tree(table)}_root: {err}") from None


def available_modalities():
    roots = source_roots()
    return ["lab"] + [m for m in ("ecg", "echo") if roots[m] is not None]


def required_modalities():
    """The configured modalities that the source has (docs/CURATION.md, Sources: absent roots are not required)."""
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


def per_patient_report(path, **report_options):
    """``report(path, ...)`` for an output that shows single patients (their lab values, ECG traces, echo frames):
    in the HTML report only with ``privacy.report_per_patient``; otherwise the file is written but not embedded."""
    return report(path, **report_options) if PRIVACY["report_per_patient"] else path


def demo_params():
    demo = dict(config["demo"])
    demo["echo_frames"] = list(demo["echo_frames"])
    return demo




# hftri_mimic.ecg.signal.THRESHOLDS (not imported: that module loads wfdb and scipy; a test keeps the two equal).
ECG_THRESHOLDS = ("min_fs", "clip_fraction", "flat_std_mv", "quality_min")


def ecg_processing_settings():
    """The ecg settings a shard job uses: not the shard size (the plan's) nor the thresholds (the collect
    job's), so that moving a threshold reruns no shard."""
    return {k: v for k, v in config["ecg"].items() if k != "shard_size" and k not in ECG_THRESHOLDS}


def ecg_settings():
    """The ecg block without the shard size (which changes the plan, not the per-record processing)."""
    return {k: v for k, v in config["ecg"].items() if k != "shard_size"}


def attrition_stage_inputs(wildcards):
    inputs = {
        "attrition": OUT / "cohort/attrition.parquet",
        "eligibility": OUT / "cohort/eligibility.parquet",
        "manifest": OUT / "hftri/manifest.parquet",
    }
    if "ecg" in available_modalities():
        inputs["ecg_exclusions"] = OUT / "ecg/exclusions.parquet"
    if "echo" in available_modalities():
        inputs["echo_exclusions"] = OUT / "echo/exclusions.parquet"
    return inputs


def echo_source_files(wildcards):
    return [OUT / "source/echo/files"] if IS_DEMO else []


def echo_settings():
    """Per-cine processing values of the echo block (not the shard size or classifier training)."""
    settings = {k: v for k, v in config["echo"].items() if k not in ("shard_size", "view_classifier")}
    settings["framing"] = echo_framing()
    return settings


def echo_framing():
    """echo.framing with `auto` resolved: EchoPrime's own framing whenever EchoPrime's weights (encoder or view
    classifier) are used, else the sector box (docs/SIGNALS.md, Echo)."""
    framing = config["echo"]["framing"]
    if framing != "auto":
        return framing
    echoprime = config["model"]["echo"].get("checkpoint") or config["echo"]["view_classifier"]["weights"]
    return "echoprime" if echoprime else "sector_box"


def view_classifier_weights():
    """EchoPrime's weights when configured, else the demo classifier the workflow trains."""
    weights = config["echo"]["view_classifier"]["weights"]
    return Path(weights) if weights else OUT / "echo/view_classifier.pt"


def echo_shard_outputs(kind):
    def inputs(wildcards):
        plan = checkpoints.echo_shard_plan.get().output[0]
        return [OUT / f"echo/shards/{k}.{kind}.parquet" for k in shard_ids(plan)]

    return inputs


def echo_outputs():
    if "echo" not in available_modalities():
        return []
    echo_classifier_input(None)  # a real source without EchoPrime's classifier fails here, before the demo's is planned
    outputs = [OUT / "echo/index.parquet", OUT / "echo/dicoms.parquet", OUT / "echo/exclusions.parquet"]
    if not config["echo"]["view_classifier"]["weights"]:
        outputs.append(OUT / "echo/view_classifier.json")
    return outputs


def check_echo_classifier():
    """A configured view classifier must be a file (checked when the Snakefile is read)."""
    weights = config["echo"]["view_classifier"]["weights"]
    if weights and not Path(weights).is_file():
        raise ValueError(f"config echo.view_classifier.weights: {weights} is not a file")


def echo_classifier_input(wildcards):
    """Input of echo_shard. A real source needs EchoPrime's view classifier (only the demo has views to train one
    from): checked when an echo shard is planned, so that the download and the plans need no weights."""
    if IS_DEMO:
        return view_classifier_weights()
    check_real_source()  # an absent source is named first: it is the user's first step, the weights come later
    if not config["echo"]["view_classifier"]["weights"]:
        raise ValueError("config echo.view_classifier.weights: required for a real echo source "
                         "(EchoPrime's view_classifier.pt or .ckpt)")
    return view_classifier_weights()


def cohort_download_stamp(tree):
    """With source.missing_files: exclude, what download_cohort last fetched for a tree (file count and bytes, from
    its manifest): a download that brings files excluded as not_downloaded reruns the files check, and so the
    shards. None otherwise (with `error` nothing absent ever reaches a shard)."""
    if IS_DEMO or SOURCE["missing_files"] != "exclude":
        return None
    project = cohort_projects(config["download"]).get(tree)
    if project is None:
        return None
    manifest = Path(config["download"]["dest_root"]) / f"{project}.cohort.download.json"
    if not manifest.is_file():
        return None
    record = json.loads(manifest.read_text())
    return [record["n_files"], record["bytes"]]


def ecg_outputs():
    if "ecg" not in available_modalities():
        return []
    return [OUT / "ecg/index.parquet", OUT / "ecg/exclusions.parquet"]


def manifest_inputs(wildcards):
    inputs = {"cohort": OUT / "cohort/cohort.parquet", "lab_values": OUT / "dataset/lab_values.parquet"}
    if "ecg" in available_modalities():
        inputs["ecg_index"] = OUT / "ecg/index.parquet"
    if "echo" in available_modalities():
        inputs["echo_index"] = OUT / "echo/index.parquet"
    return inputs


def datasheet_inputs(wildcards):
    inputs = {name: OUT / f"hftri/{name}.parquet" for name in ("manifest", "labs", "text", "attrition", "splits")}
    if "echo" in available_modalities():
        inputs["echo_dicoms"] = OUT / "echo/dicoms.parquet"
    for modality in ("ecg", "echo"):
        if modality in available_modalities():
            inputs[f"{modality}_window"] = OUT / f"cohort/{modality}_window.parquet"
    return inputs


def dataset_outputs():
    return (
        [OUT / f"hftri/{name}.parquet" for name in ("manifest", "labs", "text", "splits", "attrition")]
        + [OUT / "hftri/DATASHEET.md"]
        + training_view_files()
    )


def training_view_files():
    """The training jobs' views (rule training_views), built with the dataset so that `snakemake dataset` followed
    by `snakemake all` compares them by checksum before retraining (docs/RUNNING.md, Changing a criterion)."""
    return [OUT / f"train/data/{name}.parquet" for name in ("inputs", "diagnosis", "prognosis")]


def deep_merge(base, overrides):
    """``base`` with ``overrides`` laid over it, dictionaries merged key by key (neither argument is changed)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def retrieval_prediction_files():
    """Per-direction retrieval predictions: the directions whose two modalities are in train.retrieval_subset."""
    used = config["train"]["retrieval_subset"].split("+")
    return [
        OUT / f"eval/predictions/retrieval/{direction_name(q, c)}.parquet" for q, c in DIRECTIONS if q in used and c in used
    ]


def subset_available(subset):
    return all(m in available_modalities() for m in subset.split("+"))


def trained_subsets():
    """The configured modality subsets whose modalities the source has (a hosp-only source trains `lab`)."""
    return [s for s in config["train"]["subsets"] if subset_available(s)]


def trained_tasks():
    """Configured tasks that can run: retrieval needs the retrieval subset's modalities, the others a subset."""
    tasks = []
    for task in config["train"]["tasks"]:
        if task == "retrieval" and subset_available(config["train"]["retrieval_subset"]):
            tasks.append(task)
        elif task != "retrieval" and trained_subsets():
            tasks.append(task)
    return tasks


def eval_outputs():
    tables = [OUT / f"eval/{task}.parquet" for task in trained_tasks()]
    return tables + [OUT / "eval/RESULTS.md", OUT / "eval/environment.json"]


def results_inputs(wildcards):
    tables = {task: OUT / f"eval/{task}.parquet" for task in trained_tasks()}
    if "retrieval" in tables:
        tables["retrieval_candidates"] = OUT / "eval/retrieval_candidates.parquet"
    return tables


def variant_runs():
    """Every compare run: {table, variant, label, task, subset} for each configured variant x its tasks x its
    subsets that the source can serve (a variant's subsets/tasks default to train.subsets / compare.tasks)."""
    runs = []
    for name, variant in config["compare"]["variants"].items():
        subsets = variant.get("subsets") or config["train"]["subsets"]
        for task in variant.get("tasks") or config["compare"]["tasks"]:
            for subset in subsets:
                if subset_available(subset):
                    runs.append({"table": variant["table"], "variant": name, "label": variant["label"], "task": task,
                                 "subset": subset})  # fmt: skip
    return runs


def compare_tables_present():
    """Table groups (fusion, ablation, sweep) with at least one run, in the order of
    models.evaluation.compare.TABLE_TITLES."""
    present = {run["table"] for run in variant_runs()}
    return [table for table in ("fusion", "ablation", "sweep") if table in present]


def variant_prediction(run):
    return OUT / f"eval/compare/predictions/{run['variant']}/{run['task']}/{run['subset']}.parquet"


def compare_inputs(wildcards):
    """The variants' predictions and TGMM's on the same (task, subset) pairs."""
    runs = variant_runs()
    references = sorted({(run["task"], run["subset"]) for run in runs})
    return {
        "variants": [variant_prediction(run) for run in runs],
        "references": [OUT / f"eval/predictions/{task}/{subset}.parquet" for task, subset in references],
    }


def seed_runs():
    """Every run of the seed table: {task, subset, seed} for the configured seeds x tasks x subsets that are trained
    (subsets in train.subsets the source can serve), the reported seed (train.optim.seed) included."""
    reference = config["train"]["optim"]["seed"]
    seeds = sorted({reference, *config["seeds"]["seeds"]})
    subsets = [s for s in config["seeds"]["subsets"] if s in trained_subsets()]
    tasks = [t for t in config["seeds"]["tasks"] if t in config["train"]["tasks"]]
    return [{"task": t, "subset": s, "seed": seed} for t in tasks for s in subsets for seed in seeds]


def seed_prediction(run):
    """The reported run's predictions for the reference seed, a seed run's otherwise."""
    if run["seed"] == config["train"]["optim"]["seed"]:
        return OUT / f"eval/predictions/{run['task']}/{run['subset']}.parquet"
    return OUT / f"eval/seeds/predictions/seed{run['seed']}/{run['task']}/{run['subset']}.parquet"


def seed_inputs(wildcards):
    runs = seed_runs()
    if not runs:
        raise ValueError("seeds: no configured task x subset is trained (see train.tasks / train.subsets)")
    return {"predictions": [seed_prediction(run) for run in runs]}


def check_compare_config():
    """Each variant's model keys must be keys of config.yaml's `model` (the schema checks their values).

    The schema is loaded once with libyaml: snakemake's validate() parses it again on every call, which took
    ~1 s of every snakemake start for the variants."""
    import jsonschema
    import yaml

    schema = yaml.load((REPO / "workflow/schemas/config.schema.yaml").read_text(), Loader=yaml.CSafeLoader)
    validator = jsonschema.validators.validator_for(schema)(schema)
    for name, variant in config["compare"]["variants"].items():
        if re.fullmatch(r"seed\d+", name):
            raise ValueError(f"compare.variants.{name}: seed<N> names the seed runs' scenarios; rename the variant")
        merged = {**config, "model": deep_merge(config["model"], variant["model"])}
        error = jsonschema.exceptions.best_match(validator.iter_errors(merged))
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path)
            raise ValueError(
                f"compare.variants.{name}.model is not a valid `model` override: {error.message} (at {where})"
            )


def explain_tasks():
    """Configured explanation tasks whose trimodal run the workflow trains (lab+ecg+echo in train.subsets)."""
    if "lab+ecg+echo" not in trained_subsets():
        return []
    return [t for t in config["explain"]["tasks"] if t in trained_tasks()]


def explain_inputs(wildcards):
    inputs = dataset_inputs(wildcards)
    if features_cached():
        inputs["features"] = OUT / "train/features.pt"
    for task in explain_tasks():
        inputs[f"summary_{task}"] = OUT / f"train/{task}/lab+ecg+echo/summary.json"
    return inputs


def explain_outputs():
    if not explain_tasks():
        return []
    return [OUT / "eval/explain/attention.parquet"]


# Pretrained weights and vocabularies: config key -> what the path must be (a job fails hours later otherwise).
WEIGHT_PATHS = {
    ("model", "text", "folder"): "a Bio_ClinicalBERT folder (config.json, vocab.txt, weights)",
    ("model", "ecg", "checkpoint"): "ST-MEM's checkpoint file",
    ("model", "echo", "checkpoint"): "EchoPrime's echo_prime_encoder.pt",
    ("dataset", "text", "tokenizer"): "a folder with vocab.txt",
}


def check_weight_paths():
    """A configured checkpoint or folder that is not there fails before any job runs, naming its key."""
    for keys, what in WEIGHT_PATHS.items():
        value = config
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not value:
            continue
        expect_folder = keys[-1] in ("folder", "tokenizer")
        if not (Path(value).is_dir() if expect_folder else Path(value).is_file()):
            kind = "directory" if expect_folder else "file"
            raise ValueError(f"config {'.'.join(keys)}: {value} is not a {kind} (expected {what})")


def check_model_config():
    """Cross-key checks the schema cannot express, before any job runs."""
    if config["model"]["echo"].get("size") != config["echo"]["size"]:
        raise ValueError(
            f"model.echo.size ({config['model']['echo'].get('size')}) must equal echo.size "
            f"({config['echo']['size']}): the echo encoder reads the stored clips"
        )
    dims = {f"model.{part}.proj_dim": config["model"][part].get("proj_dim", 768) for part in ("text", "ecg", "echo")}
    dims["model.tgmm.dim"] = config["model"]["tgmm"].get("dim", 768)
    if len(set(dims.values())) != 1:
        raise ValueError(f"the encoders must project to TGMM's dim: {dims}")


check_echo_classifier()
check_weight_paths()
check_model_config()
check_compare_config()


def check_seeds_config():
    """With `train.optim.ensemble: N` a run with seed s trains members s .. s+N-1: seed runs whose member seeds overlap
    (e.g. 0 and 1 with N = 3) would share models and understate the spread."""
    ensemble = config["train"]["optim"].get("ensemble", 1)
    size = max(ensemble.values()) if isinstance(ensemble, dict) else int(ensemble)
    seeds = sorted({config["train"]["optim"]["seed"], *config["seeds"]["seeds"]})
    close = [(a, b) for a, b in zip(seeds, seeds[1:]) if b - a < size]
    if close:
        raise ValueError(
            f"seeds: runs with seeds {close[0][0]} and {close[0][1]} share ensemble members (train.optim.ensemble "
            f"trains seeds s .. s+{size - 1}); space the seeds (and train.optim.seed) by at least {size}"
        )


check_seeds_config()


def download_params(wildcards):
    return {
        "timeout_s": config["download"]["timeout_s"],
        "retries": config["download"]["retries"],
        "backoff_s": config["download"]["backoff_s"],
        "max_file_gb": config["download"]["max_file_gb"],
        "reverify": config["download"]["reverify"],
    }


def cohort_download_settings(wildcards):
    """Phase 2 of one project: only its file list, into the tree the run reads (checked here, when the job is
    planned, so that phase 1 never needs a source tree)."""
    tree = config["download"]["projects"][wildcards.project].get("cohort_files")
    settings = project_settings(config["download"], wildcards.project)
    root = source_roots()[tree] if not IS_DEMO else None
    if root is None or Path(root).resolve() != Path(settings["dest"]).resolve():
        raise ValueError(
            f"config source.{tree}_root must be the folder download.projects.{wildcards.project} fills "
            f"({settings['dest']}), with source.kind: mimic: download_cohort fetches the files the run reads there"
        )
    return {**settings, "include": []}
