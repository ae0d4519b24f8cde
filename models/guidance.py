"""Textual guidance module (TGM, paper §4.2.3, Eq. 9)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from models.config import SLOTS, TASKS, TGMMConfig
from models.fusion import LambdaMix, masked_attention


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim -2 of x (..., L, D) where mask (..., L) is True."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(-2) / m.sum(-2).clamp_min(1.0)


def learnable_init_ids(tokenizer, count: int, words: tuple[str, ...] | None, seed: int) -> list[int]:
    """Vocabulary ids whose embedding rows initialise the K learnable tokens C_l (§4.2.3).

    ``words``: the ids of these words, cycled to ``count``. Otherwise ``count`` distinct ordinary
    tokens (no special, ``[unused…]`` or ``##`` continuation pieces) drawn with a seeded generator.
    """
    if words:
        ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"learnable_init_words {words!r} tokenise to nothing")
        return list(itertools.islice(itertools.cycle(ids), count))
    special = set(tokenizer.all_special_ids)
    ordinary = sorted(
        i for tok, i in tokenizer.get_vocab().items() if i not in special and not tok.startswith(("[", "##"))
    )
    if len(ordinary) < count:
        ordinary = sorted(set(range(len(tokenizer))) - special)
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(ordinary), generator=generator)[:count]
    return [ordinary[i] for i in pick.tolist()]


@dataclass
class GuidanceOutput:
    """TGM output.

    features (B, 7, D): Z_all,C, the task-specific features (Eq. 9), zeros in invalid slots
    mask (B, 7) bool: valid slots
    prompt (B, P, D): Z_C, the encoded semi-soft textual content (same for every patient)
    memory (B, 7+P, D), memory_mask (B, 7+P): Cat(Z_all,C, Z_C), what the response decoder reads
    pooled (B, D): mean of Z_all,C over the valid slots
    attention (B, 7, 7+P): Eq. 9 attention of each slot over the slots and prompt tokens (head mean)
    lambda_k / lambda_v (B, 2): Eq. 3 weights of the (Z_all, Z_C) keys / values
    """

    features: Tensor
    mask: Tensor
    prompt: Tensor
    memory: Tensor
    memory_mask: Tensor
    pooled: Tensor
    attention: Tensor
    lambda_k: Tensor
    lambda_v: Tensor


class TextualGuidance(nn.Module):
    """TGM (paper §4.2.3, Eq. 9).

    Semi-soft textual content (SSTC): the human-defined task text C_h (tokenised with the given
    tokenizer, embedded with the given token embedding) inserted at position ``human_text_position``
    among K learnable tokens C_l (initialised from rows of the same embedding matrix), plus learned
    positions, encoded by a one-layer transformer encoder: Z_C = TE(Concat(C_h, C_l)).
    Eq. 9: Z_all,C = LN(G_all ⊙ softmax(Q_all K_all,Cᵀ/√d) V_all,C + DP(Z_all; p_drop)), with Q_all from
    the slots of Z_all, K/V_all,C the λ-weighted (Eq. 3) projected keys/values of the valid slots and
    of the prompt tokens, G_all = sigmoid(P(Cat(Z_all, attended, mean Z_C))) (Eq. 6 form), DP stochastic
    depth (per sample) on the Z_all term as Eq. 9 writes it, LN layer normalisation.
    Inputs:  z_all (B, 7, D), slot_mask (B, 7) bool, task ∈ TASKS
    Output:  GuidanceOutput (features (B, 7, D), prompt (B, P, D), memory (B, 7+P, D), pooled (B, D))
    """

    def __init__(self, config: TGMMConfig, tokenizer, token_embedding: nn.Embedding):
        super().__init__()
        dim, proj = config.dim, config.proj_dim
        self.heads = config.heads
        # Table 6's "human-defined text only" keeps C_h and drops the K learnable tokens.
        n_learnable = config.num_learnable_tokens if config.guidance == "human+learned" else 0
        self.position = min(config.human_text_position, n_learnable)
        self.token_embedding = token_embedding  # shared with the text encoder / response module
        emb_dim = token_embedding.embedding_dim
        self.in_proj = nn.Identity() if emb_dim == dim else nn.Linear(emb_dim, dim)

        for task in TASKS:
            ids = tokenizer(config.prompts[task], add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"prompt for {task!r} tokenises to nothing")
            if config.num_learnable_tokens + len(ids) > config.max_prompt_len:
                raise ValueError(f"prompt for {task!r} is longer than max_prompt_len {config.max_prompt_len}")
            self.register_buffer(f"human_ids_{task}", torch.tensor(ids, dtype=torch.long), persistent=False)
        init_ids = (
            learnable_init_ids(tokenizer, n_learnable, config.learnable_init_words, config.learnable_init_seed)
            if n_learnable
            else []
        )
        self.register_buffer("learnable_init_ids", torch.tensor(init_ids, dtype=torch.long))
        # C_l; None without learnable tokens (an empty parameter would trip Adafactor's factored moments)
        self.learnable = (
            nn.Parameter(token_embedding.weight.detach()[self.learnable_init_ids].clone()) if n_learnable else None
        )
        self.prompt_pos = nn.Parameter(torch.randn(config.max_prompt_len, dim) * 0.02)
        self.encoder = nn.TransformerEncoderLayer(  # TE: a single transformer encoder layer
            dim,
            config.heads,
            config.ffn_mult * dim,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Learned slot-type embeddings, added where queries/keys/values are computed, so attention can
        # tell t from ts etc. (the paper's Eq. 9 is otherwise permutation-blind over the 7 slots).
        self.slot_embedding = nn.Parameter(torch.randn(len(SLOTS), dim) * 0.02)
        self.w_q = nn.Linear(dim, proj)
        self.w_k = nn.Linear(dim, dim)
        self.w_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, proj)  # P(·) of Eq. 3
        self.lam = LambdaMix(proj, config.tgm_lambda_init)  # groups: (Z_all, Z_C)
        self.out = nn.Linear(proj, dim)
        self.gate = nn.Linear(3 * dim, dim)  # G_all
        self.drop = nn.Dropout(config.dropout)
        # torchvision's StochasticDepth, mode "row": drops the term for whole samples while training
        # and rescales survivors by 1/(1-p); the identity in eval mode.
        self.stochastic_depth = StochasticDepth(config.stochastic_depth, mode="row")
        self.norm = nn.LayerNorm(dim)

    def human_ids(self, task: str) -> Tensor:
        """Token ids of C_h for a task, (L_h,)."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        return getattr(self, f"human_ids_{task}")

    def human_span(self, task: str) -> slice:
        """Positions of C_h within the SSTC of ``task``."""
        return slice(self.position, self.position + len(self.human_ids(task)))

    def sstc(self, task: str) -> Tensor:
        """Concat(C_h, C_l) in token-embedding space, C_h at ``human_text_position``: (P, E)."""
        human = self.token_embedding(self.human_ids(task))
        if self.learnable is None:
            return human
        return torch.cat([self.learnable[: self.position], human, self.learnable[self.position :]], 0)

    def encode_prompt(self, task: str) -> Tensor:
        """Z_C = TE(SSTC): (1, P, D)."""
        x = self.in_proj(self.sstc(task))
        x = x + self.prompt_pos[: x.shape[0]]
        return self.encoder(x.unsqueeze(0))

    def forward(self, z_all: Tensor, slot_mask: Tensor, task: str) -> GuidanceOutput:
        b, n_slots, _ = z_all.shape
        slot_mask = slot_mask.bool()
        if not slot_mask.any(-1).all():
            raise ValueError("every sample needs at least one valid slot (one present modality)")
        prompt = self.encode_prompt(task).expand(b, -1, -1)  # Z_C (B, P, D)
        n_prompt = prompt.shape[1]

        typed = z_all + self.slot_embedding
        q = self.w_q(typed)  # Q_all
        pk_all, pv_all = self.proj(self.w_k(typed)), self.proj(self.w_v(typed))
        pk_c, pv_c = self.proj(self.w_k(prompt)), self.proj(self.w_v(prompt))
        both = torch.ones(b, 2, dtype=torch.bool, device=z_all.device)
        lam_k, lam_v = self.lam(
            torch.stack([masked_mean(pk_all, slot_mask), pk_c.mean(1)], 1),
            torch.stack([masked_mean(pv_all, slot_mask), pv_c.mean(1)], 1),
            both,
        )  # (B, 2): λ for Z_all, 1-λ for Z_C (Eq. 3 with two groups)
        keys = torch.cat([lam_k[:, :1, None] * pk_all, lam_k[:, 1:, None] * pk_c], 1)  # K_all,C (B, 7+P, E)
        values = torch.cat([lam_v[:, :1, None] * pv_all, lam_v[:, 1:, None] * pv_c], 1)  # V_all,C
        key_mask = torch.cat([slot_mask, slot_mask.new_ones(b, n_prompt)], 1)
        attended, weights = masked_attention(q, keys, values, key_mask, self.heads)
        attended = self.drop(self.out(attended))  # (B, 7, D)

        context = prompt.mean(1, keepdim=True).expand(-1, n_slots, -1)
        gate = torch.sigmoid(self.gate(torch.cat([z_all, attended, context], -1)))  # G_all
        features = self.norm(gate * attended + self.stochastic_depth(z_all))  # Eq. 9
        features = torch.where(slot_mask[..., None], features, torch.zeros((), dtype=z_all.dtype, device=z_all.device))

        return GuidanceOutput(
            features=features,
            mask=slot_mask,
            prompt=prompt,
            memory=torch.cat([features, prompt], 1),
            memory_mask=key_mask,
            pooled=masked_mean(features, slot_mask),
            attention=weights.mean(1) * slot_mask[..., None].to(z_all.dtype),
            lambda_k=lam_k,
            lambda_v=lam_v,
        )


def unguided(z_all: Tensor, slot_mask: Tensor) -> GuidanceOutput:
    """Table 6's "no TGM": the fused features pass unchanged, with no prompt tokens for the response to read.

    Inputs:  z_all (B, 7, D), slot_mask (B, 7) bool
    Output:  GuidanceOutput with features = z_all (zeros in invalid slots), P = 0 prompt tokens, attention zeros
    """
    slot_mask = slot_mask.bool()
    features = torch.where(slot_mask[..., None], z_all, torch.zeros((), dtype=z_all.dtype, device=z_all.device))
    b, n_slots, dim = z_all.shape
    return GuidanceOutput(
        features=features,
        mask=slot_mask,
        prompt=z_all.new_zeros(b, 0, dim),
        memory=features,
        memory_mask=slot_mask,
        pooled=masked_mean(features, slot_mask),
        attention=z_all.new_zeros(b, n_slots, n_slots),
        lambda_k=z_all.new_zeros(b, 2),
        lambda_v=z_all.new_zeros(b, 2),
    )
