"""TGMM losses (paper §4.3, Eq. 10-16). All are batch means of vectorised terms and return a scalar."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100  # target id at padding positions


def lm_loss(logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """L_lm (Eq. 10-11): token-level cross-entropy of the correct answer under teacher forcing.

    logits (B, C, L, V) decoder token logits of every candidate; targets (B, C, L) token ids with IGNORE
    at padding; labels (B,) index of the correct candidate. Mean over all target tokens of the batch's
    correct answers.
    """
    rows = torch.arange(labels.shape[0], device=labels.device)
    chosen, chosen_targets = logits[rows, labels], targets[rows, labels]  # (B, L, V), (B, L)
    return F.cross_entropy(chosen.flatten(0, 1), chosen_targets.flatten(), ignore_index=IGNORE)


def mc_loss(loglik: Tensor, labels: Tensor) -> Tensor:
    """L_mc (Eq. 10-11): cross-entropy over the candidates, ŷ = softmax of their log-likelihoods.

    loglik (B, C); labels (B,). Mean over the batch of -log softmax(loglik)[label].
    """
    return F.cross_entropy(loglik, labels)


def unlikelihood_loss(loglik: Tensor, labels: Tensor, eps: float = 1e-6) -> Tensor:
    """L_unlikely (Eq. 12): -1/(C-1) Σ_{j≠y*} log(1 - exp(ŷ_j) + ε), ŷ_j the total log-likelihood of answer j.

    loglik (B, C) candidates' (sequence) log-likelihoods; labels (B,). Mean over the batch.
    1 - exp(ŷ) is computed as -expm1(ŷ), exact for ŷ near 0.
    """
    c = loglik.shape[1]
    wrong = torch.ones_like(loglik, dtype=torch.bool).scatter(1, labels[:, None], False)
    terms = torch.log(-torch.expm1(loglik) + eps)
    return -(terms * wrong.to(terms.dtype)).sum(1).div(c - 1).mean()


def cox_loss(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """L_r (Eq. 14): average negative Cox partial log-likelihood over the events, Breslow ties.

    -1/n_{δ=1} Σ_{i: δ_i=1} [ŷ_i - log Σ_{j: t_j ≥ t_i} exp(ŷ_j)]: every subject still at risk at t_i,
    tied ones included, is in the risk set of each of the tied events (Breslow).
    risk (N,) predicted log-hazard ŷ; time (N,) follow-up time; event (N,) 1 = event, 0 = censored.
    With no event in the batch the loss is 0, still attached to the graph (zero gradient).
    Cost O(N log N): sort by decreasing time, log-cumsum-exp, and for tied times the risk-set sum
    of the last subject of the tie group.
    """
    event = event.to(risk.dtype)
    n_events = event.sum()
    if n_events == 0:
        return risk.sum() * 0.0
    order = torch.argsort(time, descending=True, stable=True)
    r, t, e = risk[order], time[order], event[order]
    log_cumsum = torch.logcumsumexp(r, 0)
    ascending = (-t).contiguous()
    last_of_ties = torch.searchsorted(ascending, ascending, right=True) - 1  # last index with time ≥ t_i
    log_risk_set = log_cumsum[last_of_ties]
    return -((r - log_risk_set) * e).sum() / n_events


def comparable_pairs(time: Tensor, event: Tensor) -> Tensor:
    """(N, N) bool: pair (i, j) where i should get the higher risk (Harrell's comparable pairs).

    i had the event and j was still event-free after it: t_i < t_j, or t_i = t_j with j censored.
    """
    event = event.bool()
    earlier = time[:, None] < time[None, :]
    tie_censored = (time[:, None] == time[None, :]) & ~event[None, :]
    return event[:, None] & (earlier | tie_censored)


def margin_ranking_loss(risk: Tensor, time: Tensor, event: Tensor, margin: float) -> Tensor:
    """L_m (Eq. 15): mean over the n comparable pairs (i, j) of max(0, -y_ij (ŷ_i - ŷ_j) + margin).

    y_ij = +1 since i (earlier event) should rank above j. Eq. 15's leading minus sign is dropped:
    the loss is the usual hinge, minimised. risk, time, event (N,). 0 (with grad) when no pair exists.
    """
    pairs = comparable_pairs(time, event)
    if not pairs.any():
        return risk.sum() * 0.0
    hinge = F.relu(margin - (risk[:, None] - risk[None, :]))
    return hinge[pairs].mean()


def info_nce(v: Tensor, u: Tensor, temperature: float) -> Tensor:
    """Eq. 16 in both directions: (mean_i l_i^(v→u) + mean_i l_i^(u→v)) / 2.

    l_i^(v→u) = -log exp(<v_i, u_i>/τ) / Σ_k exp(<v_i, u_k>/τ), <·,·> cosine similarity.
    v, u (N, D) embeddings of the same N patients from two modalities.
    """
    logits = F.normalize(v, dim=-1) @ F.normalize(u, dim=-1).T / temperature
    target = torch.arange(v.shape[0], device=v.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
