"""Response module (paper §4.2.4), the linear prober of the ablation (Table 6) and the prognosis risk score."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import TGMMConfig
from models.guidance import GuidanceOutput
from models.losses import IGNORE


@dataclass
class ResponseOutput:
    """Scores of the candidate answers of one task.

    loglik (B, C): log-likelihood of each candidate (decoder: sum or mean of its token log-probs;
        linear prober: log_softmax of its scores)
    logits (B, C, L, V) | None: decoder token logits (teacher forced), None for the linear prober
    targets (B, C, L) | None: the token each position predicts, IGNORE at padding
    inputs (C, L) | None: the decoder input ids (start token, then the answer shifted right)
    """

    loglik: Tensor
    logits: Tensor | None = None
    targets: Tensor | None = None
    inputs: Tensor | None = None

    @property
    def pred(self) -> Tensor:
        """Index of the most likely candidate, (B,)."""
        return self.loglik.argmax(-1)


def candidate_tokens(tokenizer, answers: tuple[str, ...], start_id: int, end_id: int | None, pad_id: int):
    """Teacher-forcing tensors for candidate answers.

    Targets are the answer's tokens (then ``end_id`` when given); inputs are the targets shifted right
    behind ``start_id``. Returns inputs (C, L) padded with ``pad_id`` and targets (C, L) padded with IGNORE.
    """
    rows = []
    for answer in answers:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"candidate answer {answer!r} tokenises to nothing")
        rows.append(ids + ([end_id] if end_id is not None else []))
    length = max(map(len, rows))
    inputs = torch.full((len(rows), length), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for i, ids in enumerate(rows):
        targets[i, : len(ids)] = torch.tensor(ids)
        inputs[i, : len(ids)] = torch.tensor([start_id, *ids[:-1]])
    return inputs, targets


def sequence_loglik(logits: Tensor, targets: Tensor, reduction: str = "sum") -> Tensor:
    """Σ (or mean) over a candidate's tokens of log p(target token): logits (..., L, V), targets (..., L) -> (...)."""
    valid = targets != IGNORE
    logp = logits.log_softmax(-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    total = (logp * valid.to(logp.dtype)).sum(-1)
    if reduction == "mean":
        return total / valid.sum(-1).clamp_min(1).to(logp.dtype)
    if reduction != "sum":
        raise ValueError(f"unknown reduction {reduction!r}")
    return total


class ResponseModule(nn.Module):
    """Response module (paper §4.2.4): a one-layer transformer decoder, from scratch, scores every answer.

    Each candidate answer (tokenised with the given tokenizer, followed by the end token) is teacher
    forced: its decoder input is the start token then the answer shifted right; the TGM memory
    Cat(Z_all,C, Z_C) (the task features paired with their SSTC) is duplicated for every candidate and
    read by cross-attention. A candidate's log-likelihood is the sum (``loglik_reduction``) of its
    token log-probabilities over the full tokenizer vocabulary; the prediction is the argmax.
    Start / end tokens: the tokenizer's [CLS] / [SEP] (BERT has no BOS / EOS).
    Inputs:  GuidanceOutput (memory (B, M, D), memory_mask (B, M)), task with candidates
    Output:  ResponseOutput (loglik (B, C), logits (B, C, L, V), targets (B, C, L))
    """

    def __init__(self, config: TGMMConfig, tokenizer, token_embedding: nn.Embedding):
        super().__init__()
        dim = config.dim
        self.reduction = config.loglik_reduction
        self.start_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        end_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if self.start_id is None or (config.answer_eos and end_id is None):
            raise ValueError("the tokenizer needs a [CLS]/BOS start token and a [SEP]/EOS end token")
        self.tasks = tuple(config.candidates)
        for task, answers in config.candidates.items():
            inputs, targets = candidate_tokens(
                tokenizer, answers, self.start_id, end_id if config.answer_eos else None, tokenizer.pad_token_id or 0
            )
            if inputs.shape[1] > config.max_answer_len:
                raise ValueError(f"a {task} answer is longer than max_answer_len {config.max_answer_len}")
            self.register_buffer(f"inputs_{task}", inputs, persistent=False)
            self.register_buffer(f"targets_{task}", targets, persistent=False)
        self.token_embedding = token_embedding  # shared; answers are embedded like the prompt
        emb_dim = token_embedding.embedding_dim
        self.in_proj = nn.Identity() if emb_dim == dim else nn.Linear(emb_dim, dim)
        self.pos = nn.Parameter(torch.randn(config.max_answer_len, dim) * 0.02)
        self.decoder = nn.TransformerDecoderLayer(
            dim,
            config.heads,
            config.ffn_mult * dim,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, len(tokenizer))

    def candidates(self, task: str) -> tuple[Tensor, Tensor]:
        """Decoder inputs and targets of a task's candidates, (C, L) each."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r} has no candidate answers; expected one of {self.tasks}")
        return getattr(self, f"inputs_{task}"), getattr(self, f"targets_{task}")

    def score(self, memory: Tensor, memory_mask: Tensor, task: str) -> ResponseOutput:
        """memory (B, M, D), memory_mask (B, M) bool (True = attend) -> ResponseOutput."""
        inputs, targets = self.candidates(task)
        b, m, d = memory.shape
        c, length = inputs.shape
        x = self.in_proj(self.token_embedding(inputs)) + self.pos[:length]  # (C, L, D)
        x = x.unsqueeze(0).expand(b, -1, -1, -1).reshape(b * c, length, d)
        mem = memory.unsqueeze(1).expand(-1, c, -1, -1).reshape(b * c, m, d)
        mem_pad = (~memory_mask.bool()).unsqueeze(1).expand(-1, c, -1).reshape(b * c, m)
        tgt_pad = (targets == IGNORE).unsqueeze(0).expand(b, -1, -1).reshape(b * c, length)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=memory.device), 1)
        h = self.decoder(x, mem, tgt_mask=causal, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
        logits = self.lm_head(self.norm(h)).view(b, c, length, -1)
        full_targets = targets.unsqueeze(0).expand(b, -1, -1)
        return ResponseOutput(
            loglik=sequence_loglik(logits, full_targets, self.reduction),
            logits=logits,
            targets=full_targets,
            inputs=inputs,
        )

    def forward(self, guidance: GuidanceOutput, task: str) -> ResponseOutput:
        return self.score(guidance.memory, guidance.memory_mask, task)


class LinearProbe(nn.Module):
    """Linear prober (Table 6 ablation): one linear layer per task on the pooled TGM output.

    Same interface as ResponseModule; its scores pass through log_softmax and are used as the
    candidates' log-likelihoods (there are no token logits, so Eq. 10's L_lm is skipped).
    Inputs:  GuidanceOutput (pooled (B, D)), task
    Output:  ResponseOutput (loglik (B, C))
    """

    def __init__(self, config: TGMMConfig):
        super().__init__()
        self.heads = nn.ModuleDict({task: nn.Linear(config.dim, len(a)) for task, a in config.candidates.items()})

    def forward(self, guidance: GuidanceOutput, task: str) -> ResponseOutput:
        if task not in self.heads:
            raise ValueError(f"task {task!r} has no candidate answers")
        return ResponseOutput(loglik=F.log_softmax(self.heads[task](guidance.pooled), -1))


def risk_from_loglik(loglik: Tensor, high_index: int) -> Tensor:
    """Prognosis risk ŷ (Eq. 14-15) from candidate log-likelihoods (B, C): log-odds of the high-risk answer.

    ŷ = ℓ_high - logsumexp(ℓ_others); with two candidates ("low risk", "high risk") ŷ = ℓ_high - ℓ_low,
    a monotone function of the probability the response module gives to "high risk".
    """
    others = torch.cat([loglik[:, :high_index], loglik[:, high_index + 1 :]], 1)
    return loglik[:, high_index] - others.logsumexp(-1)


class RiskHead(nn.Module):
    """Alternative prognosis risk score (``risk_score="head"``): a linear map of the pooled TGM output.

    Inputs:  pooled (B, D)
    Output:  risk (B,)
    """

    def __init__(self, config: TGMMConfig):
        super().__init__()
        self.linear = nn.Linear(config.dim, 1)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.linear(pooled).squeeze(-1)
