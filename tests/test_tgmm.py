"""TGMM parts (paper §4): MFFM masking, the §4.3 losses against scikit-survival and hand arithmetic,
TGM prompt layout, response scoring, and a forward/backward pass for every subset × task (small D)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from sksurv.datasets import load_whas500
from sksurv.linear_model import CoxPHSurvivalAnalysis
from transformers import BertTokenizerFast

from models.config import MODALITIES, SLOTS, SUBSETS, TASKS, TGMMConfig, subset_mask
from models.fusion import MedFlexFusion
from models.guidance import TextualGuidance
from models.losses import (
    IGNORE,
    cox_loss,
    info_nce,
    lm_loss,
    margin_ranking_loss,
    mc_loss,
    unlikelihood_loss,
)
from models.response import ResponseModule, sequence_loglik
from models.tgmm import TGMM

DIM = 32
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FILLER = ["ejection", "fraction", "troponin", "creatinine", "sodium", "potassium", "atrial", "ventricle"]


def small_config(**overrides) -> TGMMConfig:
    values = {"dim": DIM, "heads": 4, "retrieval_dim": 16, "num_learnable_tokens": 6, "human_text_position": 2}
    return TGMMConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def vocab_words() -> list[str]:
    cfg = TGMMConfig()
    texts = [*cfg.prompts.values(), *(a for answers in cfg.candidates.values() for a in answers)]
    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    return SPECIAL + words + FILLER


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, vocab_words):
    path = tmp_path_factory.mktemp("tok") / "vocab.txt"
    path.write_text("\n".join(vocab_words) + "\n")
    # transformers 5: BertTokenizerFast is BertTokenizer and takes the file as `vocab=`; `vocab_file=`
    # is silently ignored (the tokenizer then only knows the 5 special tokens).
    tok = BertTokenizerFast(vocab=str(path))
    assert tok.get_vocab() == {w: i for i, w in enumerate(vocab_words)}, "tokenizer did not load vocab.txt"
    for text in TGMMConfig().prompts.values():
        assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"], f"[UNK] in {text!r}"
    return tok


@pytest.fixture(scope="module")
def embedding(tokenizer):
    torch.manual_seed(0)
    return torch.nn.Embedding(len(tokenizer), DIM)


# --- 1. MFFM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("subset", SUBSETS)
def test_mffm_absent_modalities_have_no_influence(subset):
    torch.manual_seed(0)
    fusion = MedFlexFusion(small_config()).eval()
    present = torch.tensor(subset_mask(subset)).expand(4, -1)
    z = torch.randn(4, 3, DIM)
    z_other = torch.where(present[..., None], z, torch.randn(4, 3, DIM) * 100)
    a, b = fusion(z, present), fusion(z_other, present)
    for name in ("z_all", "slot_mask", "attention", "lambda_k", "lambda_v"):
        assert torch.equal(getattr(a, name), getattr(b, name)), f"{subset}: absent inputs changed {name}"

    expected_slots = [all(p for p, m in zip(subset_mask(subset), subset_mask(s), strict=True) if m) for s in SLOTS]
    assert a.slot_mask[0].tolist() == expected_slots, f"{subset}: wrong valid slots {a.slot_mask[0].tolist()}"
    assert not a.z_all[~a.slot_mask].any(), f"{subset}: invalid slots are not zero"
    absent_cols = ~present[:, None, None, :].expand_as(a.attention)
    assert not a.attention[absent_cols].any(), f"{subset}: attention weight on an absent modality"
    rows = a.attention.sum(-1)  # every valid shared slot: each member's weights sum to 1
    for g, slot in enumerate(("lab+ecg", "ecg+echo", "lab+echo", "lab+ecg+echo")):
        if expected_slots[SLOTS.index(slot)]:
            members = torch.tensor(subset_mask(slot))
            assert torch.allclose(rows[:, g, members], torch.ones(1)), f"{subset}/{slot}: attention rows"

    z_grad = z.clone().requires_grad_(True)
    out = fusion(z_grad, present)
    (out.z_all * torch.randn_like(out.z_all)).sum().backward()
    for j, name in enumerate(MODALITIES):
        grad = z_grad.grad[:, j]
        if present[0, j]:
            assert grad.abs().sum() > 0, f"{subset}: no gradient reaches present {name}"
        else:
            assert torch.equal(grad, torch.zeros_like(grad)), f"{subset}: gradient leaks into absent {name}"


def test_mffm_pair_slot_ignores_third_modality():
    """A shared slot is fused from its own modalities: Z_ts does not change when echo changes."""
    torch.manual_seed(1)
    fusion = MedFlexFusion(small_config()).eval()
    present = torch.ones(2, 3, dtype=torch.bool)
    z = torch.randn(2, 3, DIM)
    z2 = z.clone()
    z2[:, 2] = torch.randn(2, DIM)
    a, b = fusion(z, present).z_all, fusion(z2, present).z_all
    assert torch.equal(a[:, SLOTS.index("lab+ecg")], b[:, SLOTS.index("lab+ecg")]), "Z_ts depends on echo"
    assert not torch.equal(a[:, SLOTS.index("lab+ecg+echo")], b[:, SLOTS.index("lab+ecg+echo")])


# --- 2a. Cox loss against scikit-survival ----------------------------------------------------------


def test_cox_loss_matches_scikit_survival_breslow_on_whas500():
    X, y = load_whas500()
    columns = ["age", "bmi", "hr", "sysbp", "diasbp"]
    x = X[columns].to_numpy(dtype=np.float64)
    x = (x - x.mean(0)) / x.std(0)
    time, event = y["lenfol"].astype(np.float64), y["fstat"]
    assert len(np.unique(time)) < len(time), "whas500 should have tied times (exercises Breslow)"

    reference = CoxPHSurvivalAnalysis(ties="breslow", alpha=0).fit(x, y).coef_

    xt, tt, et = torch.from_numpy(x), torch.from_numpy(time), torch.from_numpy(event)
    beta = torch.zeros(len(columns), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [beta], lr=1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = cox_loss(xt @ beta, tt, et)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    diff = np.abs(beta.detach().numpy() - reference)
    print("whas500 |β_torch - β_sksurv|:", dict(zip(columns, diff.round(8).tolist(), strict=True)))
    assert diff.max() < 1e-3, f"Cox β {beta.detach().numpy()} vs scikit-survival {reference}"


def test_cox_loss_without_events_is_zero_with_gradient():
    risk = torch.randn(5, requires_grad=True)
    loss = cox_loss(risk, torch.arange(5.0), torch.zeros(5))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(risk.grad, torch.zeros(5))


def test_cox_loss_small_case_by_hand():
    # times 1, 1, 2, 3; events 1, 1, 0, 1 (two tied events at t=1): Breslow risk sets {all}, {all}, {3}.
    r = [0.5, -0.2, 0.1, 0.3]
    lse_all = math.log(sum(math.exp(v) for v in r))
    expected = -((r[0] - lse_all) + (r[1] - lse_all) + (r[3] - r[3])) / 3
    got = cox_loss(torch.tensor(r, dtype=torch.float64), torch.tensor([1.0, 1, 2, 3]), torch.tensor([1, 1, 0, 1]))
    assert got.item() == pytest.approx(expected, abs=1e-12)


# --- 2b. the other losses by hand ----------------------------------------------------------------


def log_softmax_at(values, index):
    return values[index] - math.log(sum(math.exp(v) for v in values))


def test_lm_loss_by_hand():
    # B=2, C=2, L=2, V=3. Sample 0's answer is candidate 0 (tokens 0, 1); sample 1's is candidate 1 (token 2).
    logits = torch.tensor(
        [
            [[[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]], [[9.0, 9.0, 9.0], [9.0, 9.0, 9.0]]],
            [[[9.0, 9.0, 9.0], [9.0, 9.0, 9.0]], [[0.3, -1.0, 2.0], [5.0, 5.0, 5.0]]],
        ]
    )
    targets = torch.tensor([[[0, 1], [2, IGNORE]], [[0, 1], [2, IGNORE]]])
    expected = -(
        log_softmax_at([1.0, 2.0, 0.5], 0) + log_softmax_at([0.1, 0.2, 0.3], 1) + log_softmax_at([0.3, -1.0, 2.0], 2)
    )
    expected /= 3  # mean over the 3 target tokens of the correct answers
    assert lm_loss(logits, targets, torch.tensor([0, 1])).item() == pytest.approx(expected, abs=1e-6)


def test_mc_loss_by_hand():
    loglik = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    expected = -(log_softmax_at([-1.0, -2.0], 0) + log_softmax_at([-0.5, -3.0], 1)) / 2
    assert mc_loss(loglik, torch.tensor([0, 1])).item() == pytest.approx(expected, abs=1e-6)


def test_unlikelihood_loss_by_hand():
    eps = 1e-6
    loglik = torch.tensor([[-0.1, -1.2, -2.3], [-0.7, -0.05, -4.0]])
    sample0 = -(math.log(1 - math.exp(-1.2) + eps) + math.log(1 - math.exp(-2.3) + eps)) / 2  # label 0
    sample1 = -(math.log(1 - math.exp(-0.7) + eps) + math.log(1 - math.exp(-0.05) + eps)) / 2  # label 2
    got = unlikelihood_loss(loglik, torch.tensor([0, 2]), eps)
    assert got.item() == pytest.approx((sample0 + sample1) / 2, abs=1e-6)


def test_info_nce_by_hand():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    u = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    tau = 0.5
    c = [[1 / math.sqrt(2), 0.0], [1 / math.sqrt(2), 1.0]]  # cosine(v_i, u_k)
    v_to_u = [-log_softmax_at([c[i][0] / tau, c[i][1] / tau], i) for i in range(2)]
    u_to_v = [-log_softmax_at([c[0][k] / tau, c[1][k] / tau], k) for k in range(2)]
    expected = (sum(v_to_u) / 2 + sum(u_to_v) / 2) / 2
    assert info_nce(v, u, tau).item() == pytest.approx(expected, abs=1e-6)


def test_margin_ranking_loss_by_hand():
    # Comparable pairs (i has the event, j event-free after): (0,1) tied time with 1 censored, (0,2), (0,3).
    time = torch.tensor([1.0, 1.0, 2.0, 3.0])
    event = torch.tensor([1, 0, 0, 1])
    risk = torch.tensor([0.2, 0.25, 0.0, 0.5])
    expected = (max(0, 0.1 - (0.2 - 0.25)) + max(0, 0.1 - (0.2 - 0.0)) + max(0, 0.1 - (0.2 - 0.5))) / 3
    assert margin_ranking_loss(risk, time, event, 0.1).item() == pytest.approx(expected, abs=1e-6)
    none = margin_ranking_loss(risk.requires_grad_(True), time, torch.zeros(4), 0.1)
    assert none.item() == 0.0 and none.requires_grad


# --- 3. TGM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 3, 6])
def test_tgm_human_text_at_insertion_position(tokenizer, embedding, position):
    cfg = small_config(human_text_position=position)
    tgm = TextualGuidance(cfg, tokenizer, embedding)
    for task in TASKS:
        ids = tokenizer(cfg.prompts[task], add_special_tokens=False)["input_ids"]
        words = re.findall(r"\w+|[^\w\s]", cfg.prompts[task].lower())
        assert tokenizer.convert_ids_to_tokens(ids) == words, "prompt text did not survive tokenisation"
        sstc = tgm.sstc(task)
        span = tgm.human_span(task)
        assert span == slice(position, position + len(ids))
        assert torch.equal(sstc[span], embedding.weight[ids]), f"{task}: C_h not at position {position}"
        assert torch.equal(sstc[:position], tgm.learnable[:position])
        assert torch.equal(sstc[span.stop :], tgm.learnable[position:])
        assert sstc.shape[0] == cfg.num_learnable_tokens + len(ids)


def test_tgm_learnable_tokens_start_as_embedding_rows(tokenizer, embedding):
    tgm = TextualGuidance(small_config(), tokenizer, embedding)
    ids = tgm.learnable_init_ids
    assert len(ids) == 6 and len(set(ids.tolist())) == 6
    assert not set(ids.tolist()) & set(tokenizer.all_special_ids), "learnable tokens start from special tokens"
    assert torch.equal(tgm.learnable.detach(), embedding.weight[ids])
    again = TextualGuidance(small_config(), tokenizer, embedding)
    assert torch.equal(again.learnable_init_ids, ids), "seeded initialisation is not reproducible"

    chosen = TextualGuidance(small_config(learnable_init_words=("troponin", "sodium")), tokenizer, embedding)
    want = tokenizer.convert_tokens_to_ids(["troponin", "sodium"] * 3)
    assert chosen.learnable_init_ids.tolist() == want
    assert torch.equal(chosen.learnable.detach(), embedding.weight[want])


def test_tgm_stochastic_depth_is_identity_in_eval(tokenizer, embedding):
    torch.manual_seed(0)
    tgm = TextualGuidance(small_config(stochastic_depth=1.0, dropout=0.0), tokenizer, embedding)
    z_all = torch.relu(torch.randn(3, 7, DIM))
    mask = torch.ones(3, 7, dtype=torch.bool)
    tgm.eval()
    assert torch.equal(tgm.stochastic_depth(z_all), z_all)
    with_sd = tgm(z_all, mask, "diagnosis").features
    sd = tgm.stochastic_depth
    tgm.stochastic_depth = torch.nn.Identity()
    without = tgm(z_all, mask, "diagnosis").features
    tgm.stochastic_depth = sd
    assert torch.equal(with_sd, without), "stochastic depth changed the eval output"
    tgm.train()  # p = 1 drops the Z_all term of Eq. 9 for every sample while training
    assert not torch.allclose(tgm(z_all, mask, "diagnosis").features, with_sd)


def test_tgm_shapes_and_masked_slots(tokenizer, embedding):
    torch.manual_seed(0)
    tgm = TextualGuidance(small_config(), tokenizer, embedding).eval()
    mask = torch.tensor([[True, False, False, False, True, True, False]] * 2)
    z_all = torch.relu(torch.randn(2, 7, DIM)) * mask[..., None]
    out = tgm(z_all, mask, "prognosis")
    n_prompt = tgm.sstc("prognosis").shape[0]
    assert out.features.shape == (2, 7, DIM) and out.pooled.shape == (2, DIM)
    assert out.memory.shape == (2, 7 + n_prompt, DIM) and out.attention.shape == (2, 7, 7 + n_prompt)
    assert not out.features[~mask].any() and not out.attention[..., :7][~mask[:, None, :].expand(-1, 7, -1)].any()


# --- 4. Response module ----------------------------------------------------------------------------


def test_response_scores_candidates_by_teacher_forcing(tokenizer, embedding):
    torch.manual_seed(0)
    cfg = small_config(dropout=0.0)
    response = ResponseModule(cfg, tokenizer, embedding).eval()
    memory = torch.randn(3, 9, DIM)
    memory_mask = torch.ones(3, 9, dtype=torch.bool)
    memory_mask[0, 5:] = False
    out = response.score(memory, memory_mask, "diagnosis")
    inputs, targets = response.candidates("diagnosis")
    c = len(cfg.candidates["diagnosis"])
    assert out.loglik.shape == (3, c) and out.pred.shape == (3,)

    for k, answer in enumerate(cfg.candidates["diagnosis"]):
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
        assert targets[k, : len(ids)].tolist() == ids and (targets[k, len(ids) :] == IGNORE).all()
        assert inputs[k, 0] == tokenizer.cls_token_id, "teacher forcing must start with the start token"
        assert inputs[k, 1 : len(ids)].tolist() == ids[:-1], "decoder input is not the answer shifted right"
        for b in range(3):  # the log-likelihood is the sum of the answer's token log-probs
            logp = torch.log_softmax(out.logits[b, k], -1)
            by_hand = sum(logp[t, ids[t]].item() for t in range(len(ids)))
            assert out.loglik[b, k].item() == pytest.approx(by_hand, abs=1e-5)
    assert torch.allclose(out.loglik, sequence_loglik(out.logits, out.targets))

    # Step 0 sees only the start token: running the decoder on [CLS] alone gives the same logits.
    start = response.in_proj(embedding(torch.tensor([[tokenizer.cls_token_id]]))) + response.pos[:1]
    h = response.decoder(start.expand(3, -1, -1), memory, memory_key_padding_mask=~memory_mask)
    first = response.lm_head(response.norm(h))[:, 0]
    for k in range(c):
        assert torch.allclose(out.logits[:, k, 0], first, atol=1e-5), f"candidate {k}: step 0 is not the start token"


def test_response_mean_reduction(tokenizer, embedding):
    torch.manual_seed(0)
    response = ResponseModule(small_config(loglik_reduction="mean"), tokenizer, embedding).eval()
    out = response.score(torch.randn(2, 4, DIM), torch.ones(2, 4, dtype=torch.bool), "prognosis")
    lengths = (out.targets != IGNORE).sum(-1)
    assert torch.allclose(out.loglik * lengths, sequence_loglik(out.logits, out.targets, "sum"), atol=1e-5)


# --- 5. the whole model ----------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["decoder", "linear"])
def test_tgmm_forward_backward_every_subset_and_task(tokenizer, embedding, head):
    torch.manual_seed(0)
    cfg = small_config(response_head=head, risk_score="response" if head == "decoder" else "head")
    model = TGMM(cfg, tokenizer, embedding)
    b = 6
    z = torch.randn(b, 3, DIM)
    batch = {
        "label": torch.tensor([0, 1, 0, 1, 1, 0]),
        "event": torch.tensor([1, 0, 1, 0, 0, 1]),
        "time": torch.tensor([3.0, 5.0, 1.0, 2.0, 8.0, 3.0]),
    }
    for task in TASKS:
        for subset in SUBSETS:
            model.zero_grad()
            out = model(z, subset, task)
            losses = model.loss(out, batch)
            loss = losses["loss"]
            assert torch.isfinite(loss), f"{task}/{subset}: loss {loss}"
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert all(torch.isfinite(g).all() for g in grads), f"{task}/{subset}: non-finite gradient"
            if task == "retrieval":
                assert out.embeddings.shape == (b, 3, cfg.retrieval_dim)
                norms = out.embeddings.norm(dim=-1)[:, torch.tensor(subset_mask(subset))]
                assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
                if "+" not in subset:
                    continue  # one modality: nothing to contrast
            else:
                c = len(cfg.candidates[task])
                assert out.loglik.shape == (b, c) and out.pred.shape == (b,)
                assert out.attention["mffm"].shape == (b, 4, 3, 3)
                if task == "prognosis":
                    assert out.risk.shape == (b,)
            assert any(g.abs().sum() > 0 for g in grads), f"{task}/{subset}: no gradient on any parameter"
            trained = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
            assert any(n.startswith("guidance.") for n in trained), f"{task}/{subset}: TGM gets no gradient"


def test_tgmm_output_ignores_absent_modalities(tokenizer, embedding):
    torch.manual_seed(0)
    model = TGMM(small_config(), tokenizer, embedding).eval()
    z = torch.randn(4, 3, DIM)
    for subset in SUBSETS:
        present = torch.tensor(subset_mask(subset))
        z_other = torch.where(present[None, :, None], z, torch.randn(4, 3, DIM))
        for task in ("diagnosis", "prognosis"):
            a, b = model(z, subset, task), model(z_other, subset, task)
            assert torch.equal(a.loglik, b.loglik), f"{task}/{subset}: absent inputs changed the answer scores"
        a, b = model(z, subset, "retrieval"), model(z_other, subset, "retrieval")
        assert torch.equal(a.embeddings, b.embeddings), f"{subset}: absent inputs changed retrieval embeddings"


def test_tgmm_with_token_embeddings_narrower_than_dim(tokenizer):
    """A demo BERT (hidden 16) feeding a D=32 TGMM: prompt and answers are projected to D."""
    torch.manual_seed(0)
    model = TGMM(small_config(), tokenizer, torch.nn.Embedding(len(tokenizer), 16))
    out = model(torch.randn(3, 3, DIM), "lab+ecg+echo", "prognosis")
    loss = model.loss(out, {"event": torch.tensor([1, 0, 1]), "time": torch.tensor([2.0, 3.0, 1.0])})["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.guidance.in_proj.weight.grad.abs().sum() > 0


# --- 6. Table 5 baselines and Table 6 ablations ------------------------------------------------------

VARIANTS = [
    {"fusion": "mean_cat", "guidance": "none", "response_head": "linear"},
    {"fusion": "multisurv", "guidance": "none", "response_head": "linear"},
    {"guidance": "none"},
    {"guidance": "human"},
    {"response_head": "linear"},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_variants_train_on_every_subset_and_ignore_absent_modalities(tokenizer, embedding, variant):
    torch.manual_seed(0)
    model = TGMM(small_config(**variant), tokenizer, embedding)
    z = torch.randn(5, 3, DIM)
    batch = {"label": torch.tensor([0, 1, 0, 1, 1]), "event": torch.tensor([1, 0, 1, 0, 1]),
             "time": torch.tensor([2.0, 3.0, 1.0, 4.0, 5.0])}  # fmt: skip
    for subset in SUBSETS:
        present = torch.tensor(subset_mask(subset))
        z_other = torch.where(present[None, :, None], z, torch.randn(5, 3, DIM) * 50)
        for task in ("diagnosis", "prognosis"):
            model.train()
            model.zero_grad()
            loss = model.loss(model(z, subset, task), batch)["loss"]
            loss.backward()
            assert torch.isfinite(loss), f"{variant} {task}/{subset}"
            trained = {
                n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum()
            }
            assert "fusion" in trained or "+" not in subset or variant.get("fusion") == "multisurv", trained
            model.eval()
            a, b = model(z, subset, task), model(z_other, subset, task)
            assert torch.equal(a.loglik, b.loglik), f"{variant} {task}/{subset}: absent inputs changed the answer"


def test_no_tgm_has_no_guidance_and_human_only_has_no_learnable_tokens(tokenizer, embedding):
    unguided = TGMM(small_config(guidance="none"), tokenizer, embedding)
    assert unguided.guidance is None and not any(n.startswith("guidance.") for n, _ in unguided.named_parameters())
    human = TGMM(small_config(guidance="human"), tokenizer, embedding)
    human_ids = tokenizer(TGMMConfig().prompts["diagnosis"], add_special_tokens=False)["input_ids"]
    assert human.guidance.learnable is None
    assert torch.equal(human.guidance.sstc("diagnosis"), embedding(torch.tensor(human_ids)))
    full = TGMM(small_config(), tokenizer, embedding)
    assert full.guidance.sstc("diagnosis").shape[0] == len(human_ids) + 6


def test_mean_cat_imputes_absent_modalities_with_the_mean_of_present_ones():
    from models.baselines import FUSED_SLOT, MeanCatFusion

    torch.manual_seed(0)
    fusion = MeanCatFusion(small_config()).eval()
    z = torch.randn(2, 3, DIM)
    present = torch.tensor([[True, False, True], [True, True, True]])
    imputed = z.clone()
    imputed[0, 1] = (z[0, 0] + z[0, 2]) / 2
    out = fusion(z, present)
    assert torch.allclose(out.z_all[:, FUSED_SLOT], fusion.proj(imputed.flatten(1)))
    assert out.slot_mask.sum(-1).tolist() == [1, 1] and out.z_all.sum(-1)[:, :FUSED_SLOT].abs().max() == 0


def test_multisurv_takes_the_elementwise_max_over_present_modalities():
    from models.baselines import FUSED_SLOT, MultiSurvFusion

    torch.manual_seed(0)
    fusion = MultiSurvFusion(small_config()).eval()
    z = torch.randn(2, 3, DIM)
    z[0, 1] = 1e3  # absent: must not win the max
    present = torch.tensor([[True, False, True], [False, True, False]])
    expected = torch.stack([torch.maximum(z[0, 0], z[0, 2]), z[1, 1]])
    assert torch.allclose(fusion(z, present).z_all[:, FUSED_SLOT], fusion.mlp(expected))
