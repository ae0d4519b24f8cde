"""MedFlexFusion module (MFFM, paper §4.2.2, Eq. 1-8) and the λ mixing it shares with the TGM."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import SLOTS, TGMMConfig, slot_members

# The shared slots of Z_all, each fused from its own modalities only (Eq. 7 "by setting i ∈ ...").
GROUPS: tuple[str, ...] = ("lab+ecg", "ecg+echo", "lab+echo", "lab+ecg+echo")  # ts, sm, tm, tsm


class LambdaMix(nn.Module):
    """λ weights of Eq. 3-5, generalised to any set of present groups (modalities or token groups).

    Eq. 3 mixes the projected keys (values) of t, s, m with weights (λ1, λ2, 1-λ1-λ2), where the λ
    are sigmoids of sums of projected keys (values) (Eq. 4-5). Here the weights are a softmax over
    the *present* groups of ``bias + W · Σ_present P(K_g)``: with two groups this is exactly a sigmoid
    (λ, 1-λ); with three it is a proper simplex (the paper's 1-λ1-λ2 can turn negative), and an
    absent group gets weight 0. ``W`` starts at zero, so the initial weights are ``init``
    renormalised over the present groups.
    Inputs:  pk, pv (N, G, E) pooled projected keys / values per group; mask (N, G) bool (≥1 True)
    Output:  wk, wv (N, G) weights, each row summing to 1 over the present groups
    """

    def __init__(self, dim: int, init: tuple[float, ...]):
        super().__init__()
        self.k = nn.Linear(dim, len(init))
        self.v = nn.Linear(dim, len(init))
        with torch.no_grad():
            for layer in (self.k, self.v):
                layer.weight.zero_()
                layer.bias.copy_(torch.log(torch.tensor(init)))

    def forward(self, pk: Tensor, pv: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        m = mask.unsqueeze(-1).to(pk.dtype)
        wk = self.k((pk * m).sum(-2)).masked_fill(~mask, float("-inf")).softmax(-1)
        wv = self.v((pv * m).sum(-2)).masked_fill(~mask, float("-inf")).softmax(-1)
        return wk, wv


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(..., L, H·d) -> (..., H, L, d)."""
    *lead, length, width = x.shape
    return x.reshape(*lead, length, heads, width // heads).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """(..., H, L, d) -> (..., L, H·d)."""
    *lead, heads, length, d = x.shape
    return x.transpose(-3, -2).reshape(*lead, length, heads * d)


def masked_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """softmax(Q Kᵀ / √d) V per head, keys outside ``key_mask`` get weight exactly 0.

    q (..., Lq, E), k / v (..., Lk, E), key_mask (..., Lk) bool with ≥1 True per row.
    Returns the output (..., Lq, E) and the weights (..., H, Lq, Lk).
    """
    qh, kh, vh = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    scores = qh @ kh.transpose(-2, -1) / math.sqrt(qh.shape[-1])
    scores = scores.masked_fill(~key_mask[..., None, None, :], float("-inf"))
    weights = scores.softmax(-1)
    return merge_heads(weights @ vh), weights


@dataclass
class FusionOutput:
    """MFFM output. z_all (B, 7, D) in SLOTS order t, ts, s, sm, m, tm, tsm; slot_mask (B, 7) bool;
    attention (B, 4, 3, 3): per shared slot (ts, sm, tm, tsm), query modality × key modality, averaged
    over heads (rows/columns of modalities outside the slot or absent are 0); lambda_k / lambda_v
    (B, 4, 3): the Eq. 3 weights of each modality's keys / values in each shared slot."""

    z_all: Tensor
    slot_mask: Tensor
    attention: Tensor
    lambda_k: Tensor
    lambda_v: Tensor


class MedFlexFusion(nn.Module):
    """MFFM (paper §4.2.2, Eq. 1-8).

    Local (Eq. 1-5): each present modality's query attends to the λ-weighted projected keys/values
    of all present modalities of a slot (itself included). Global (Eq. 6-7): a sigmoid gate computed
    from Cat(Z_t, Z_s, Z_i_local, Z_m) weighs each local feature and the gated features are summed.
    Every shared slot (ts, sm, tm, tsm) is fused from its own modalities only, so a slot depends on
    exactly the modalities its name lists; it is valid when all of them are present.
    Eq. 8: Z_all = ReLU(Cat(Z_t, Z_ts, Z_s, Z_sm, Z_m, Z_tm, Z_tsm)), kept as 7 tokens of width D.
    An absent modality is replaced by zeros before anything reads it, its keys are masked and the
    slots that need it output zeros, so it has no influence on any output or gradient.
    Inputs:  z (B, 3, D) modality features in order lab, ecg, echo; present (B, 3) bool
    Output:  FusionOutput (z_all (B, 7, D), slot_mask (B, 7), attention maps)
    """

    def __init__(self, config: TGMMConfig):
        super().__init__()
        dim, proj = config.dim, config.proj_dim
        self.heads = config.heads
        self.w_q = nn.Linear(dim, proj)  # Eq. 1 (Q is used at the width of P(K) so Eq. 2 is defined)
        self.w_k = nn.Linear(dim, dim)  # Eq. 1
        self.w_v = nn.Linear(dim, dim)  # Eq. 1
        self.proj = nn.Linear(dim, proj)  # P(·) of Eq. 3, the same map for keys and values
        self.lam = LambdaMix(proj, config.mffm_lambda_init)  # Eq. 3-5
        self.out = nn.Linear(proj, dim)  # back to D for Eq. 7-8
        self.gate = nn.Linear(4 * dim, dim)  # P(·) of Eq. 6
        self.drop = nn.Dropout(config.dropout)
        members = torch.tensor([slot_members(g) for g in GROUPS])  # (4, 3)
        self.register_buffer("members", members, persistent=False)
        self.register_buffer("shared_slot_index", torch.tensor([SLOTS.index(g) for g in GROUPS]), persistent=False)

    def forward(self, z: Tensor, present: Tensor) -> FusionOutput:
        b, m = z.shape[:2]
        present = present.bool()
        if m != 3 or present.shape != (b, 3):
            raise ValueError(f"expected z (B, 3, D) and present (B, 3), got {tuple(z.shape)}, {tuple(present.shape)}")
        # Absent modalities become constant zeros: no value of theirs is ever read, no gradient flows back.
        z = torch.where(present[..., None], z, torch.zeros((), dtype=z.dtype, device=z.device))

        in_group = present[:, None, :] & self.members  # (B, 4, 3)
        valid = (in_group == self.members).all(-1)  # (B, 4): every modality of the slot is present
        # Invalid slots are computed on their full membership (absent members are zeros) and then
        # zeroed, which keeps every softmax row non-empty without reading an absent input.
        use = torch.where(valid[..., None], in_group, self.members)  # (B, 4, 3)
        zg = z[:, None] * use[..., None].to(z.dtype)  # (B, 4, 3, D): modalities outside the slot zeroed

        # Local (Eq. 1-5).
        q = self.w_q(zg)
        pk, pv = self.proj(self.w_k(zg)), self.proj(self.w_v(zg))  # P(K_i), P(V_i)
        lam_k, lam_v = self.lam(pk, pv, use)  # (B, 4, 3)
        keys, values = lam_k[..., None] * pk, lam_v[..., None] * pv  # Eq. 3, one token per modality
        local, weights = masked_attention(q, keys, values, use, self.heads)  # Eq. 2
        local = self.drop(self.out(local))  # Z_i_local (B, 4, 3, D)

        # Global (Eq. 6-7): G_i = sigmoid(P(Cat(Z_t, Z_s, Z_i_local, Z_m))), Z_slot = Σ_i G_i Z_i_local.
        zt, zs, zm = (zg[:, :, None, j].expand_as(local) for j in range(3))
        gate = torch.sigmoid(self.gate(torch.cat([zt, zs, local, zm], -1)))
        shared = (gate * local * use[..., None].to(z.dtype)).sum(-2)  # (B, 4, D)
        shared = torch.where(valid[..., None], shared, torch.zeros((), dtype=z.dtype, device=z.device))

        # Eq. 8 in slot order t, ts, s, sm, m, tm, tsm.
        slots = torch.stack([z[:, 0], shared[:, 0], z[:, 1], shared[:, 1], z[:, 2], shared[:, 2], shared[:, 3]], 1)
        slot_mask = torch.stack(
            [present[:, 0], valid[:, 0], present[:, 1], valid[:, 1], present[:, 2], valid[:, 2], valid[:, 3]], 1
        )
        pair = (use[..., :, None] & use[..., None, :] & valid[..., None, None]).to(z.dtype)  # (B, 4, 3, 3)
        zero_lam = valid[..., None].to(z.dtype)
        return FusionOutput(
            z_all=F.relu(slots),
            slot_mask=slot_mask,
            attention=weights.mean(2) * pair,
            lambda_k=lam_k * zero_lam,
            lambda_v=lam_v * zero_lam,
        )
