"""Stand-ins for the four pretrained checkpoints of the real run, with the released files' layouts and key sets but
random values: ST-MEM and EchoPrime from their published key lists (tests/reference_data.py, CHECKPOINT_KEYS), the
view classifier as torchvision's convnext_base with EchoPrime's 11-view head (its key list is checked against that
build in test_view_classifier), and a Bio_ClinicalBERT-layout folder (config.json without model_type, a cased
vocab.txt, pytorch_model.bin holding the BERT pre-training state dict) at BERT-base size over a small vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision
from reference_data import checkpoint_keys

from hftri_mimic.dataset.text import build_demo_vocab

# A few sentences in the lab text's shape: the stand-in vocabulary covers them.
TEXTS = [
    "The creatinine of the patient is 1.2 mg/dL. The sodium of the patient is 139 mEq/L.",
    "The patient has a history of hypertension. The patient takes beta blockers. The potassium is 4.1 mEq/L.",
    "does the patient have heart failure at this admission? no heart failure heart failure",
    "what is the risk that the patient develops heart failure in the future? low risk high risk",
    "describe the cardiac condition of the patient.",
]


def read_keys(name: str) -> dict[str, tuple[int, ...]]:
    """A published checkpoint key list (``key<TAB>shape``, shape as ``768x12``)."""
    lines = checkpoint_keys(name).read_text().splitlines()
    assert lines[0] == "key\tshape", f"{name}: unexpected header {lines[0]!r}"
    return {key: tuple(int(n) for n in shape.split("x")) for key, shape in (line.split("\t") for line in lines[1:])}


def random_state(keys: dict[str, tuple[int, ...]], seed: int = 0, std: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=g) * std for key, shape in keys.items()}


def write_st_mem(path: Path) -> Path:
    """ST-MEM's layout: the encoder under "model" (a fine-tuned file adds a head, which the loader drops)."""
    torch.save({"model": random_state(read_keys("st-mem-vit-base.tsv"), seed=1, std=0.02), "epoch": 800}, path)
    return path


def write_echoprime_encoder(path: Path) -> Path:
    torch.save(random_state(read_keys("echoprime-encoder.tsv"), seed=2, std=0.02), path)  # a plain state dict
    return path


def write_view_classifier(path: Path) -> Path:
    torch.manual_seed(3)
    model = torchvision.models.convnext_base(weights=None)
    model.classifier[-1] = torch.nn.Linear(model.classifier[-1].in_features, 11)
    torch.save(model.state_dict(), path)
    return path


def write_clinical_bert(folder: Path, texts: list[str] = TEXTS) -> Path:
    """BERT-base (768 / 12 layers / 12 heads / 3072) in Bio_ClinicalBERT's files, over a vocabulary of ``texts``."""
    from transformers import BertConfig, BertForPreTraining

    folder.mkdir(parents=True, exist_ok=True)
    build_demo_vocab(texts, folder, vocab_size=400, lowercase=False)
    vocab_size = len((folder / "vocab.txt").read_text().splitlines())
    config = BertConfig(vocab_size=vocab_size)  # BERT-base by default
    torch.manual_seed(4)
    state = BertForPreTraining(config).state_dict()
    fields = ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size", "initializer_range")
    fields += ("intermediate_size", "max_position_embeddings", "num_attention_heads", "num_hidden_layers")
    fields += ("type_vocab_size", "vocab_size")
    (folder / "config.json").write_text(json.dumps({k: getattr(config, k) for k in fields}, indent=2))
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def write_pretrained(folder: Path) -> dict[str, Path]:
    """The four checkpoints under ``folder``, by the config key each one fills in workflow/configs/real.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "model.text.folder": write_clinical_bert(folder / "Bio_ClinicalBERT"),
        "model.ecg.checkpoint": write_st_mem(folder / "st_mem_vit_base.pth"),
        "model.echo.checkpoint": write_echoprime_encoder(folder / "echo_prime_encoder.pt"),
        "echo.view_classifier.weights": write_view_classifier(folder / "view_classifier.pt"),
    }
