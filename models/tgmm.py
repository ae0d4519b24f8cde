"""TGMM (paper §4): MFFM -> TGM -> response module, with the task losses of §4.3.

The model starts from modality features, so it runs without the encoders. The training code plugs the
MARL encoders (§4.2.1, ``models/encoders/``) in front of it::

    z = torch.stack([text_encoder(lab_text), ecg_encoder(ecg), echo_encoder(echo)], 1)  # (B, 3, 768)
    out = tgmm(z, present, task)          # present (B, 3) bool, or a subset string such as "lab+echo"

An absent modality's row of ``z`` may hold anything (zeros, or skip its encoder): it is never read.
The text encoder's ``tokenizer`` and ``word_embeddings`` are what TGMM takes for the prompt and the
answers, so the SSTC and the candidate answers live in Bio-ClinicalBERT's token space (§4.2.3).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.baselines import build_fusion
from models.config import MODALITIES, TASKS, TGMMConfig, subset_mask
from models.guidance import TextualGuidance, unguided
from models.losses import cox_loss, info_nce, lm_loss, margin_ranking_loss, mc_loss, unlikelihood_loss
from models.response import LinearProbe, ResponseModule, RiskHead, risk_from_loglik


@dataclass
class TGMMOutput:
    """What TGMM.forward returns (B patients, C candidates, L answer tokens, V vocabulary, P prompt tokens).

    task: the task it ran
    z_all (B, 7, D), slot_mask (B, 7): MFFM output (Eq. 8) in slot order t, ts, s, sm, m, tm, tsm
    features (B, 7, D), pooled (B, D): TGM output Z_all,C (Eq. 9) and its mean over valid slots
    diagnosis / prognosis: loglik (B, C), pred (B,); decoder token logits (B, C, L, V) and targets (B, C, L)
        (None with the linear prober)
    prognosis: risk (B,) the risk score ŷ of Eq. 14-15
    retrieval: embeddings (B, 3, D′) L2-normalised per-modality embeddings (zeros for absent ones) and
        embedding_mask (B, 3); z_all, features, pooled and the answer fields are None
    attention: "mffm" (B, 4, 3, 3), "mffm_lambda_k"/"mffm_lambda_v" (B, 4, 3), "tgm" (B, 7, 7+P),
        "tgm_lambda_k"/"tgm_lambda_v" (B, 2); for retrieval "tgm" is (B, 3, 7, 7+P), one per modality
    """

    task: str
    z_all: Tensor | None = None
    slot_mask: Tensor | None = None
    features: Tensor | None = None
    pooled: Tensor | None = None
    loglik: Tensor | None = None
    pred: Tensor | None = None
    token_logits: Tensor | None = None
    targets: Tensor | None = None
    risk: Tensor | None = None
    embeddings: Tensor | None = None
    embedding_mask: Tensor | None = None
    attention: dict[str, Tensor] = field(default_factory=dict)


class TGMM(nn.Module):
    """Textual Guidance Multimodal fusion for Multiple tasks (paper §4, Fig. 2).

    diagnosis / prognosis: features -> MFFM (Eq. 1-8) -> TGM with the task's SSTC (Eq. 9) -> response
    module (§4.2.4) scoring the task's candidate answers; prognosis adds the risk score ŷ (by default the
    log-odds of the "high risk" answer, see ``TGMMConfig.risk_score``).
    retrieval: every present modality alone through MFFM + TGM (retrieval SSTC), pooled, projected to D′
    and L2-normalised, so a modality's embedding never depends on the modality it is matched with.
    Inputs:  features (B, 3, D) in order lab, ecg, echo; present (B, 3) bool or a subset string; task
    Output:  TGMMOutput
    """

    def __init__(self, config: TGMMConfig, tokenizer, token_embedding: nn.Embedding):
        super().__init__()
        self.config = config
        self.fusion = build_fusion(config)  # MFFM, or a Table 5 baseline
        # Without TGM (Table 6) no guidance weights exist, so a checkpoint cannot be mistaken for TGMM's.
        self.guidance = TextualGuidance(config, tokenizer, token_embedding) if config.guidance != "none" else None
        self.response: ResponseModule | LinearProbe = (
            ResponseModule(config, tokenizer, token_embedding)
            if config.response_head == "decoder"
            else LinearProbe(config)
        )
        self.risk_head = RiskHead(config) if config.risk_score == "head" else None
        self.retrieval_head = nn.Linear(config.dim, config.retrieval_dim)

    def _present(self, features: Tensor, present: Tensor | str) -> Tensor:
        if isinstance(present, str):
            present = torch.tensor(subset_mask(present), device=features.device).expand(features.shape[0], -1)
        present = present.to(features.device).bool()
        if present.shape != (features.shape[0], len(MODALITIES)):
            raise ValueError(f"present must be (B, 3), got {tuple(present.shape)}")
        return present

    def _guide(self, z_all: Tensor, slot_mask: Tensor, task: str):
        if self.guidance is None:
            return unguided(z_all, slot_mask)
        return self.guidance(z_all, slot_mask, task)

    def forward(self, features: Tensor, present: Tensor | str, task: str) -> TGMMOutput:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        present = self._present(features, present)
        if not present.any(-1).all():
            raise ValueError("every patient needs at least one present modality")
        if task == "retrieval":
            return self._retrieval(features, present)

        fused = self.fusion(features, present)
        guided = self._guide(fused.z_all, fused.slot_mask, task)
        response = self.response(guided, task)
        out = TGMMOutput(
            task=task,
            z_all=fused.z_all,
            slot_mask=fused.slot_mask,
            features=guided.features,
            pooled=guided.pooled,
            loglik=response.loglik,
            pred=response.pred,
            token_logits=response.logits,
            targets=response.targets,
            attention={
                "mffm": fused.attention,
                "mffm_lambda_k": fused.lambda_k,
                "mffm_lambda_v": fused.lambda_v,
                "tgm": guided.attention,
                "tgm_lambda_k": guided.lambda_k,
                "tgm_lambda_v": guided.lambda_v,
            },
        )
        if task == "prognosis":
            out.risk = (
                self.risk_head(guided.pooled)
                if self.risk_head is not None
                else risk_from_loglik(response.loglik, self.config.high_risk_index)
            )
        return out

    def _retrieval(self, features: Tensor, present: Tensor) -> TGMMOutput:
        b, m = features.shape[:2]
        alone = present[:, :, None] & torch.eye(m, dtype=torch.bool, device=features.device)  # (B, 3, 3)
        keep = present.reshape(-1)  # which (patient, modality) runs exist
        fused = self.fusion(features.repeat_interleave(m, 0)[keep], alone.reshape(b * m, m)[keep])
        guided = self._guide(fused.z_all, fused.slot_mask, "retrieval")
        emb = F.normalize(self.retrieval_head(guided.pooled), dim=-1)
        embeddings = emb.new_zeros(b * m, emb.shape[-1]).index_put((keep.nonzero().squeeze(-1),), emb)
        attention = guided.attention.new_zeros(b * m, *guided.attention.shape[1:])
        attention[keep] = guided.attention
        return TGMMOutput(
            task="retrieval",
            embeddings=embeddings.view(b, m, -1),
            embedding_mask=present,
            attention={"tgm": attention.view(b, m, *guided.attention.shape[1:])},
        )

    def loss(self, outputs: TGMMOutput, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The task loss of §4.3 and its parts; ``"loss"`` is the one to minimise.

        diagnosis (Eq. 10): batch["label"] (B,) long; λ_lm·L_lm + λ_mc·L_mc + λ_unlikely·L_unlikely
            (L_lm only with the decoder: the linear prober has no tokens).
        prognosis (Eq. 13): batch["event"] (B,) bool/0-1 incident HF, batch["time"] (B,) follow-up time;
            λ_dig·L_dig(label = event) + λ_r·L_r (Cox, Eq. 14) + λ_m·L_m (margin ranking, Eq. 15).
        retrieval (Eq. 16): no batch keys; symmetric InfoNCE averaged over the modality pairs, each over
            the patients having both modalities (pairs with fewer than 2 such patients are skipped).
        """
        cfg = self.config
        if outputs.task == "retrieval":
            total = self._retrieval_loss(outputs)
            return {"loss": total, "info_nce": total.detach()}
        if outputs.task == "diagnosis":
            parts = self._diagnosis_loss(outputs, batch["label"].long())
            return {"loss": parts.pop("dig"), **parts}
        event = batch["event"]
        parts = self._diagnosis_loss(outputs, event.long())
        dig = parts.pop("dig")
        time = batch["time"].to(outputs.risk.dtype)
        cox = cox_loss(outputs.risk, time, event)
        rank = margin_ranking_loss(outputs.risk, time, event, cfg.margin)
        total = cfg.lambda_dig * dig + cfg.lambda_r * cox + cfg.lambda_m * rank
        return {"loss": total, "dig": dig.detach(), "cox": cox.detach(), "margin": rank.detach(), **parts}

    def _diagnosis_loss(self, outputs: TGMMOutput, labels: Tensor) -> dict[str, Tensor]:
        cfg = self.config
        mc = mc_loss(outputs.loglik, labels)
        unlikely = unlikelihood_loss(outputs.loglik, labels, cfg.unlikelihood_eps)
        total = cfg.lambda_mc * mc + cfg.lambda_unlikely * unlikely
        parts = {"mc": mc.detach(), "unlikely": unlikely.detach()}
        if outputs.token_logits is not None:
            lm = lm_loss(outputs.token_logits, outputs.targets, labels)
            total = total + cfg.lambda_lm * lm
            parts["lm"] = lm.detach()
        return {"dig": total, **parts}

    def _retrieval_loss(self, outputs: TGMMOutput) -> Tensor:
        emb, mask = outputs.embeddings, outputs.embedding_mask
        losses = []
        for a, b in itertools.combinations(range(len(MODALITIES)), 2):
            both = mask[:, a] & mask[:, b]
            if both.sum() >= 2:
                losses.append(info_nce(emb[both, a], emb[both, b], self.config.temperature))
        if not losses:
            return emb.sum() * 0.0
        return torch.stack(losses).mean()
