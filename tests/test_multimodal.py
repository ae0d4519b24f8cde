"""The whole TGMM (encoders + MFFM + TGM + response) runs forward and backward for every modality subset
and task on CPU at demo size."""

from __future__ import annotations

import pytest
import torch

from hftri_mimic.dataset.text import build_demo_vocab
from models.config import SUBSETS, TASKS, TGMMConfig
from models.encoders.ecg import STMEMConfig, STMEMEncoder
from models.encoders.echo import EchoEncoderConfig, EchoPrimeEncoder
from models.encoders.text import TextEncoder
from models.multimodal import MultimodalTGMM

TEXTS = [
    "Age of the patient is 71 years. Creatinine of the blood is 1.2 mg/dL.",
    "Age of the patient is 50 years. NTproBNP of the blood is 2100 pg/mL. Drug history of the patient is diuretics.",
    "heart failure no heart failure high risk low risk patient",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("vocab")
    build_demo_vocab(TEXTS * 20, folder, vocab_size=300)
    dim = 32
    text = TextEncoder.random(folder, hidden=32, layers=1, heads=2, proj_dim=dim, unfreeze_layers=-1)
    ecg = STMEMEncoder(STMEMConfig(width=32, depth=1, heads=2, proj_dim=dim, unfreeze_layers=-1))
    echo = EchoPrimeEncoder(
        EchoEncoderConfig(
            arch="mvit_small",
            size=32,
            frames=4,
            proj_dim=dim,
            unfreeze_layers=-1,
            small_channels=(16, 32),
            small_depths=(1, 1),
            small_heads=(1, 2),
        )
    )
    return MultimodalTGMM(text, ecg, echo, TGMMConfig(dim=dim, heads=2, retrieval_dim=16))


def batch_of(model, size: int = 3) -> dict:
    ids, mask = model.text.encode_texts(TEXTS[:2] + TEXTS[:1])
    view_present = torch.zeros(size, 11, dtype=torch.bool)
    view_present[:, [0, 2, 7]] = True
    return {
        "input_ids": ids[:size],
        "attention_mask": mask[:size],
        "ecg": torch.randn(size, 12, 2500),
        "echo": torch.randint(0, 255, (size, 11, 4, 32, 32, 3), dtype=torch.uint8),
        "view_present": view_present,
        "present": torch.ones(size, 3, dtype=torch.bool),
        "label": torch.tensor([1, 0, 1]),
        "event": torch.tensor([1, 0, 1]),
        "time": torch.tensor([30.0, 400.0, 90.0]),
    }


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("subset", SUBSETS)
def test_forward_and_backward_for_every_subset_and_task(model, subset, task):
    model.train()
    model.zero_grad()
    batch = batch_of(model)
    outputs = model(batch, subset, task)
    loss = model.loss(outputs, batch)["loss"]
    assert torch.isfinite(loss)
    if task == "retrieval" and "+" not in subset:
        assert loss.item() == 0.0, "retrieval needs two modalities: a single one has no pair to contrast"
        return
    loss.backward()
    used = {"lab": model.text, "ecg": model.ecg, "echo": model.echo}
    # TGM and the response module read the text encoder's token embedding table (the SSTC and the
    # answers live in BERT's token space), so that table learns in every run; the rest of an absent
    # modality's encoder must not.
    shared = {id(p) for p in model.text.word_embeddings.parameters()}
    for name, encoder in used.items():
        grads = [p.grad for p in encoder.parameters() if p.requires_grad and p.grad is not None and id(p) not in shared]
        if name in subset.split("+"):
            assert any(g.abs().sum() > 0 for g in grads), f"{subset}/{task}: no gradient reaches the {name} encoder"
        else:
            assert not any(g.abs().sum() > 0 for g in grads), f"{subset}/{task}: absent {name} got a gradient"
