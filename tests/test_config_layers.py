"""Config in layers: config.yaml (the runnable demo), overlays laid over it with a later --configfile
(workflow/configs/paper.yaml, workflow/configs/real.yaml) and the tests' small run (.test/config.yaml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, base_config, deep_merge, planned_rules
from snakemake.utils import validate

from models.config import TGMMConfig
from models.encoders.ecg import STMEMConfig
from models.encoders.echo import EchoEncoderConfig
from models.training.configuration import ModelConfig

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
OVERLAYS = [*sorted((REPO / "workflow/configs").glob("*.yaml")), REPO / ".test/config.yaml"]


def overlay(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def dry_run(workdir: Path, *overlays: Path, target: str = "all") -> subprocess.CompletedProcess:
    """A dry run as a person types it: config.yaml, then each overlay, from an empty working directory."""
    configfiles = [str(REPO / "config.yaml"), *map(str, overlays)]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile", *configfiles]
    return subprocess.run([*cmd, "-n", target], cwd=workdir, capture_output=True, text=True, timeout=300)


def test_the_overlays_are_there():
    assert {p.relative_to(REPO).as_posix() for p in OVERLAYS} == {
        "workflow/configs/paper.yaml",
        "workflow/configs/real.yaml",
        ".test/config.yaml",
    }


@pytest.mark.parametrize("path", OVERLAYS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_overlay_over_the_default_validates_against_the_schema(path):
    merged = deep_merge(base_config(), overlay(path))
    validate(merged, str(SCHEMA))
    ModelConfig.from_dict(merged["model"])  # every model key a dataclass field, the dimensions consistent


def test_an_overlay_with_a_misspelt_key_fails_validation():
    merged = deep_merge(base_config(), {"model": {"tgmm": {"dimm": 768}}})
    with pytest.raises(Exception, match="dimm"):
        validate(merged, str(SCHEMA))


def test_the_paper_overlay_is_the_paper_model_the_dataclasses_define():
    """Each model key is defined once: the paper overlay restores the dataclass defaults that config.yaml shrinks."""
    paper = deep_merge(base_config(), overlay(REPO / "workflow/configs/paper.yaml"))
    model = ModelConfig.from_dict(paper["model"])
    assert model.ecg == STMEMConfig()
    assert model.echo == EchoEncoderConfig()
    assert model.tgmm == TGMMConfig()
    # the text encoder's dataclass defaults to the demo's small BERT; the paper's is Bio_ClinicalBERT (BERT-base)
    assert (model.text.hidden, model.text.layers, model.text.heads) == (768, 12, 12)
    assert {part.unfreeze_layers for part in (model.text, model.ecg, model.echo)} == {2}  # Fig. 7
    assert paper["echo"]["size"] == model.echo.size == 224
    demo = ModelConfig.from_dict(base_config()["model"])
    assert demo.tgmm.dim == 64 and demo.frozen  # the default stays the CPU demo


def test_the_test_overlay_runs_the_demo_under_its_own_output_folder(tmp_path):
    proc = dry_run(tmp_path, REPO / ".test/config.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results/test/hftri/manifest.parquet" in proc.stdout
    assert "encoder_features" in planned_rules(proc)  # the demo's frozen encoders: features cached once


def test_the_paper_overlay_trains_unfrozen_encoders_on_the_demo(tmp_path):
    proc = dry_run(tmp_path, REPO / "workflow/configs/paper.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = planned_rules(proc)
    assert "train_model" in rules and "encoder_features" not in rules  # two unfrozen layers: nothing to cache


def flat(mapping: dict, prefix: str = "") -> dict[str, object]:
    """{'model.tgmm.dim': 768, ...}: every leaf of a nested mapping by its dotted key."""
    leaves = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            leaves.update(flat(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def test_the_real_overlay_alone_is_the_paper_model_with_real_sources_and_weights():
    """One overlay for the real run: every value of paper.yaml, the three sources, the four checkpoints (each set in
    one place; the BERT folder is also the tokenizer) and bf16 on the GPU."""
    real = flat(overlay(REPO / "workflow/configs/real.yaml"))
    paper = flat(overlay(REPO / "workflow/configs/paper.yaml"))
    assert {key: real.get(key, "(absent)") for key in paper} == paper
    fill_in = {key for key, value in real.items() if value is None}
    assert fill_in == {
        "model.text.folder",
        "model.ecg.checkpoint",
        "model.echo.checkpoint",
        "echo.view_classifier.weights",
        "dataset.text.tokenizer",  # null: model.text.folder's vocabulary
    }
    assert real["source.kind"] == "mimic" and all(real[f"source.{k}_root"] for k in ("hosp", "ecg", "echo"))
    assert (real["echo.view_classifier.variant"], real["echo.classify_size"]) == ("convnext_base", 224)
    assert real["train.optim.amp"] == "bf16"
    text = (REPO / "workflow/configs/real.yaml").read_text()
    assert text.count("FILL IN") >= 6, "the paths to set are marked"


def test_the_real_overlay_names_the_missing_source_before_any_job(tmp_path):
    proc = dry_run(tmp_path, REPO / "workflow/configs/real.yaml")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "source.hosp_root" in output and "is not a directory" in output


def test_the_bert_folder_is_the_tokenizer_and_a_missing_checkpoint_is_named(tmp_path):
    """model.text.folder set, dataset.text.tokenizer null: no demo vocabulary is built, the token ids use the folder's
    vocab.txt. A checkpoint path that is not there fails before any job, naming its key."""
    bert = tmp_path / "Bio_ClinicalBERT"
    bert.mkdir()
    (bert / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    layer = tmp_path / "bert.yaml"
    layer.write_text(yaml.safe_dump({"model": {"text": {"folder": str(bert)}}}))
    proc = dry_run(tmp_path, REPO / ".test/config.yaml", layer, target="dataset")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = planned_rules(proc)
    assert "text_tokens" in rules and "demo_tokenizer" not in rules
    layer.write_text(yaml.safe_dump({"model": {"ecg": {"checkpoint": str(tmp_path / "st_mem.pth")}}}))
    proc = dry_run(tmp_path, REPO / ".test/config.yaml", layer, target="dataset")
    assert proc.returncode != 0
    assert f"config model.ecg.checkpoint: {tmp_path / 'st_mem.pth'} is not a file" in proc.stdout + proc.stderr
