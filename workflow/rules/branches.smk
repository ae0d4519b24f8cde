# The datasets the shared rules run on (docs/ARCHITECTURE.md, One DAG). The ECG stage, the tokenizer and token ids,
# the encoder features and TGMM training are written once, in loops over BRANCHES (ecg.smk, dataset.smk, train.smk);
# each branch says where its outputs go, where its records come from and what its training jobs read:
# - MIMIC-IV (HFTri-MIMIC) writes under out_dir, with rules named as the stage table names them (ecg_shard, ...);
# - PTB-XL (external validation, ptbxl.smk) writes under out_dir/ptbxl, with the same rules prefixed `ptbxl_`.
# Compare variants and training seeds are scenarios of the reported run: the same training rule with some model or
# optimiser keys replaced (train_scenario, below SCENARIO_KINDS).
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Branch:
    name: str  # "mimic" or "ptbxl"
    root: Path  # where its outputs go
    prefix: str  # of its rule names and of its folder under logs/ and benchmarks/
    ecg_records: Path  # the table of records whose ECGs the plan shards (its `ecg_study_id`, `path` columns)
    ecg_root: Path  # the ECG tree the record paths are relative to
    ecg_tree_outputs: tuple  # raw ECG folders the workflow writes (the demo's), so that a new demo reruns the shards
    ecg_root_key: str  # the config key of ecg_root, for messages
    modalities: tuple  # the signal modalities its dataset has
    tasks: tuple  # the tasks its training rule trains
    task_prompts: dict = field(default_factory=dict)  # task -> (prompt, answers) laid over model.tgmm
    training_views: bool = True  # training jobs read train/data/ views (False: the whole dataset)

    @property
    def real(self):
        """A downloaded tree (not one the workflow writes): its files are checked before the shards read them."""
        return not self.ecg_tree_outputs

    def ecg_files_check(self):
        """The check that every file the ECG shards read is there (rule ecg_files_check), for a real tree."""
        return [self.root / "ecg/source_files.json"] if self.real else []

    def missing_files(self):
        """What a shard does with an absent file: for a real tree, source.missing_files (error, or exclude as
        not_downloaded); for the demo's, None (its reader's own reason: the demo plants such faults)."""
        return SOURCE["missing_files"] if self.real else None

    def rule(self, name):
        """The branch's name of a shared rule: `ecg_shard` for MIMIC-IV, `ptbxl_ecg_shard` for PTB-XL."""
        return f"{self.prefix}_{name}" if self.prefix else name

    def log(self, path):
        return OUT / "logs" / self.prefix / path

    def benchmark(self, path):
        return OUT / "benchmarks" / self.prefix / path

    def ecg_shard_outputs(self, kind):
        """Per-shard tables of every ECG shard in the branch's plan (evaluated after its checkpoint ran)."""

        def inputs(wildcards):
            plan = getattr(checkpoints, self.rule("ecg_plan")).get().output[0]
            return [self.root / f"ecg/shards/{k}.{kind}.parquet" for k in shard_ids(plan)]

        return inputs

    def tokenizer_folder(self):
        """The configured tokenizer folder, else the text encoder's BERT folder (Bio_ClinicalBERT's vocab.txt), else
        the demo vocabulary the branch builds."""
        folder = config["dataset"]["text"]["tokenizer"] or config["model"]["text"].get("folder")
        return Path(folder) if folder else self.root / "text/tokenizer"

    def task_texts(self):
        """The prompts and answers the demo vocabulary must cover besides the lab text."""
        return [text for prompt, answers in self.task_prompts.values() for text in (prompt, *answers)]

    def model_params(self, overrides=None):
        """config["model"] with a scenario's model keys laid over it, the branch's task prompts, and the text
        encoder's vocabulary filled in (the branch's tokenizer) when no BERT folder is given, so that a new tokenizer
        retrains the models."""
        model = copy.deepcopy(config["model"])
        if overrides:
            model = deep_merge(model, overrides)
        if not model["text"].get("folder"):
            model["text"]["vocab"] = str(self.tokenizer_folder())
        if self.task_prompts:
            tgmm = model["tgmm"]
            tgmm["prompts"] = {**tgmm.get("prompts", {}), **{t: p for t, (p, _) in self.task_prompts.items()}}
            answers = {t: list(a) for t, (_, a) in self.task_prompts.items()}
            tgmm["candidates"] = {**tgmm.get("candidates", {}), **answers}
        return model

    def features_cached(self, overrides=None):
        """Every encoder frozen up to its projection: encoder features are computed once (rule encoder_features)."""
        model = self.model_params(overrides)
        return all(model[part].get("unfreeze_layers", 2) == 0 for part in ("text", "ecg", "echo"))

    def dataset_inputs(self, wildcards):
        """The whole dataset (manifest, lab text, splits, vocabulary, signal indexes), for jobs reading both tasks."""
        inputs = {name: self.root / f"hftri/{name}.parquet" for name in ("manifest", "text", "splits")}
        inputs["vocab"] = self.tokenizer_folder() / "vocab.txt"
        ecg_tables = [self.root / f"ecg/{name}.parquet" for name in ("index", "exclusions")]
        inputs["ecg"] = ecg_tables if "ecg" in self.modalities else []
        inputs["echo"] = echo_outputs() if "echo" in self.modalities else []  # MIMIC-IV's only
        return inputs

    def encoder_inputs(self, wildcards):
        """What the frozen encoders read: the inputs view (locators and array digests, no labels), the lab text and
        the vocabulary. The Zarr stores are not Snakemake files; their content reaches the view through its digests."""
        if not self.training_views:
            return self.dataset_inputs(wildcards)
        return {
            "inputs": self.root / "train/data/inputs.parquet",
            "text": self.root / "hftri/text.parquet",
            "vocab": self.tokenizer_folder() / "vocab.txt",
        }

    def training_inputs(self, wildcards):
        """A training job's inputs: the encoders' and its task's view (retrieval trains on the diagnosis splits),
        and the cached features when the job's model (a scenario's, if any) freezes every encoder."""
        inputs = self.encoder_inputs(wildcards)
        if self.training_views:
            inputs["task_view"] = self.root / f"train/data/{wildcards.get('task', 'diagnosis')}.parquet"
        if self.features_cached(scenario_model_overrides(wildcards)):
            inputs["features"] = self.root / "train/features.pt"
        return inputs

    def train_work_dir(self, wildcards):
        """Checkpoints of one training job (not declared outputs: a job killed midway resumes from its last epoch)."""
        return self.root / f"train/{wildcards.task}/{wildcards.subset}"


MIMIC = Branch(
    name="mimic",
    root=OUT,
    prefix="",
    # The index admissions, not the labelled cohort: a label criterion never reruns the ECG stage.
    ecg_records=OUT / "cohort/index_admissions.parquet",
    ecg_root=source_roots()["ecg"],
    ecg_tree_outputs=(OUT / "source/ecg/files",) if IS_DEMO else (),
    ecg_root_key="source.ecg_root",
    modalities=tuple(m for m in available_modalities() if m != "lab"),
    tasks=("diagnosis", "prognosis"),
)
PTBXL_BRANCH = Branch(
    name="ptbxl",
    root=PTB,
    prefix="ptbxl",
    ecg_records=PTB / "labels/records.parquet",
    ecg_root=ptbxl_root(),
    ecg_tree_outputs=(PTB / f"source/{PTBXL['records']}",) if PTBXL_DEMO else (),
    ecg_root_key="ptbxl.root",
    modalities=("ecg",),
    tasks=("diagnosis",),
    # PTB-XL's one task (MI vs normal) takes the diagnosis slot with its own prompt and answers
    task_prompts={"diagnosis": (PTBXL["prompt"], tuple(PTBXL["candidates"]))},
    # one task, no follow-up: the whole dataset is the training job's view (hftri_mimic/ptbxl/dataset.py)
    training_views=False,
)
BRANCHES = (MIMIC, PTBXL_BRANCH)

# The reported run's helpers are the MIMIC branch's.
model_params = MIMIC.model_params
features_cached = MIMIC.features_cached
dataset_inputs = MIMIC.dataset_inputs


# Scenarios of the reported run: {kind}/{name} -> which model or optimiser keys it replaces. Their paths put the kind
# first and the name second: eval/{kind}/predictions/{name}/{task}/{subset}.parquet, train/{kind}/{name}/...
SCENARIO_KINDS = ("compare", "seeds")


def scenario_model_overrides(wildcards):
    """A compare variant's `model` keys (none for the reported run and the seed runs)."""
    if wildcards.get("kind") == "compare":
        return config["compare"]["variants"][wildcards.name]["model"]
    return None


def scenario_optim(wildcards):
    """train.optim, with a seed run's seed (`seeds/seed{N}`)."""
    optim = config["train"]["optim"]
    if wildcards.kind == "seeds":
        return {**optim, "seed": int(wildcards.name.removeprefix("seed"))}
    return optim


def scenario_model(wildcards):
    return MIMIC.model_params(scenario_model_overrides(wildcards))


def scenario_work_dir(wildcards):
    return OUT / f"train/{wildcards.kind}/{wildcards.name}/{wildcards.task}/{wildcards.subset}"


def scenario_name_pattern():
    """A scenario's name: a configured variant or seed{N} (check_compare_config keeps the two apart)."""
    return "|".join([*(re.escape(v) for v in config["compare"]["variants"]), r"seed\d+"])
