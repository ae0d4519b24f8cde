"""The real run's overlay (workflow/configs/real.yaml) builds the paper's full-size model from the four pretrained
checkpoints and trains it: one Adafactor step on two patients on the CPU, as a GPU job would in bf16 (issue #22)."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import REPO, base_config
from pretrained import TEXTS, write_pretrained
from snakemake.utils import update_config

from hftri_mimic.echo.view_classifier import ViewClassifierConfig, load_view_classifier
from models.encoders.echo import N_VIEWS
from models.training.configuration import ModelConfig, TrainConfig
from models.training.factory import build_model
from models.training.loop import _forward_loss, make_optimizer

REAL = REPO / "workflow/configs/real.yaml"


def real_config(paths: dict[str, str]) -> dict:
    """config.yaml, then real.yaml as a later --configfile, with its FILL IN paths set."""
    config = base_config()
    update_config(config, yaml.safe_load(REAL.read_text()))
    for dotted, value in paths.items():
        *parents, key = dotted.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = str(value)
    return config


def two_patients(model, ecg_samples: int, frames: int, size: int) -> dict[str, torch.Tensor]:
    """A batch of two patients with every modality: lab texts, 12-lead ECG crops, two of 11 echo views each."""
    g = torch.Generator().manual_seed(0)
    ids, mask = model.text.encode_texts(TEXTS[:2])
    views = torch.zeros(2, N_VIEWS, dtype=torch.bool)
    views[:, [0, 3]] = True
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "ecg": torch.randn(2, 12, ecg_samples, generator=g) * 0.3,
        "echo": torch.randint(0, 256, (2, N_VIEWS, frames, size, size, 3), generator=g, dtype=torch.uint8),
        "view_present": views,
        "present": torch.ones(2, 3, dtype=torch.bool),
        "label": torch.tensor([0, 1]),
        "event": torch.tensor([0, 1]),
        "time": torch.tensor([400.0, 90.0]),
        "has_followup": torch.tensor([True, True]),
        "subject_id": torch.tensor([1, 2]),
    }


@pytest.mark.slow
def test_the_real_overlay_builds_and_steps_the_full_size_model(tmp_path):
    torch.set_num_threads(2)
    paths = write_pretrained(tmp_path / "weights")
    config = real_config(paths)
    model_config = ModelConfig.from_dict(config["model"])
    model = build_model(model_config)

    # The paper's sizes, from the checkpoints: 768-d everywhere, BERT-base text encoder, ViT-B ECG, MViTv2-S echo.
    assert model.text.bert.config.hidden_size == 768 and model.text.bert.config.num_hidden_layers == 12
    assert model_config.tgmm.dim == model_config.text.proj_dim == model_config.ecg.proj_dim == 768
    assert config["dataset"]["text"]["tokenizer"] is None, "the BERT folder is the tokenizer"
    bert_state = torch.load(paths["model.text.folder"] / "pytorch_model.bin", weights_only=True)
    word = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(model.text.word_embeddings.weight, bert_state[word]), "the folder's weights were loaded"
    st_mem = torch.load(paths["model.ecg.checkpoint"], weights_only=True)["model"]
    assert torch.equal(model.ecg.vit.state_dict()["pos_embedding"], st_mem["pos_embedding"])
    classifier = config["echo"]["view_classifier"]
    load_view_classifier(
        classifier["weights"],
        ViewClassifierConfig(variant=classifier["variant"], input_size=config["echo"]["classify_size"]),
    )  # strict: raises on any missing, extra or reshaped key

    # Two unfrozen layers per encoder (Fig. 7): only their last two blocks train, plus projections and TGMM.
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(name.startswith("text.bert.encoder.layer.11.") for name in trainable)
    assert not any(name.startswith("text.bert.encoder.layer.9.") for name in trainable)
    assert not any(name.startswith("text.bert.embeddings.") for name in trainable)
    frozen_before = model.text.word_embeddings.weight.detach().clone()

    train_config = TrainConfig.from_dict(config["train"]["optim"])
    assert train_config.amp == "bf16"
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], train_config)
    batch = two_patients(model, ecg_samples=model_config.ecg.seq_len, frames=config["echo"]["frames"], size=224)
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    for task in ("diagnosis", "prognosis"):
        optimizer.zero_grad()
        _, loss = _forward_loss(model, batch, "lab+ecg+echo", task, amp=False)  # bf16 autocast is CUDA's
        assert torch.isfinite(loss), f"{task}: loss {loss}"
        loss.backward()
        optimizer.step()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable_before[n])]
    for part in ("text.bert.encoder.layer.11.", "ecg.", "echo.", "tgmm."):
        assert any(n.startswith(part) for n in changed), f"nothing under {part} was updated"
    assert torch.equal(model.text.word_embeddings.weight, frozen_before), "a frozen weight moved"
