"""Baseline fusions for Table 5 (paper §5.3): drop-in replacements of MFFM on the same encoder features.

Both return a :class:`models.fusion.FusionOutput` whose ``z_all`` holds the fused feature in the last slot
(``lab+ecg+echo``, the slot that stands for "every present modality") and zeros elsewhere, with a slot mask
that marks only that slot valid. Everything after the fusion (TGM or none, response module or linear probe,
the losses and the training loop) is then shared with TGMM, so a comparison isolates the fusion.

An absent modality is never read: its row is replaced before anything uses it, as in MFFM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.config import SLOTS, TGMMConfig
from models.fusion import FusionOutput, MedFlexFusion

FUSED_SLOT = SLOTS.index("lab+ecg+echo")


def _check(z: Tensor, present: Tensor) -> Tensor:
    b, m = z.shape[:2]
    if m != 3 or present.shape != (b, 3):
        raise ValueError(f"expected z (B, 3, D) and present (B, 3), got {tuple(z.shape)}, {tuple(present.shape)}")
    present = present.bool()
    if not present.any(-1).all():
        raise ValueError("every patient needs at least one present modality")
    return present


def _as_slots(fused: Tensor) -> FusionOutput:
    """(B, D) fused feature -> FusionOutput with that feature in the last slot only."""
    b, dim = fused.shape
    z_all = fused.new_zeros(b, len(SLOTS), dim)
    z_all[:, FUSED_SLOT] = fused
    slot_mask = torch.zeros(b, len(SLOTS), dtype=torch.bool, device=fused.device)
    slot_mask[:, FUSED_SLOT] = True
    return FusionOutput(
        z_all=z_all,
        slot_mask=slot_mask,
        attention=fused.new_zeros(b, 4, 3, 3),  # no cross-modal attention in a baseline
        lambda_k=fused.new_zeros(b, 4, 3),
        lambda_v=fused.new_zeros(b, 4, 3),
    )


class MeanCatFusion(nn.Module):
    """Mean-Cat (Steyaert et al. 2023, as compared in Table 5): concatenation with mean imputation.

    Every absent modality's embedding is replaced by the mean of the patient's present embeddings, the three
    are concatenated (3·D) and projected back to D with a linear layer and ReLU.
    Inputs:  z (B, 3, D) in order lab, ecg, echo; present (B, 3) bool
    Output:  FusionOutput (z_all (B, 7, D) with the fused feature in slot lab+ecg+echo)
    """

    def __init__(self, config: TGMMConfig):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(3 * config.dim, config.dim), nn.ReLU(), nn.Dropout(config.dropout))

    def forward(self, z: Tensor, present: Tensor) -> FusionOutput:
        present = _check(z, present)
        weights = present[..., None].to(z.dtype)
        mean = (z * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)  # (B, 1, D)
        filled = torch.where(present[..., None], z, mean)  # absent rows never read
        return _as_slots(self.proj(filled.flatten(1)))


class MultiSurvFusion(nn.Module):
    """MultiSurv-style fusion (Vale-Silva & Rohr 2021): element-wise max over the present modality embeddings
    (their best-performing fusion), then a two-layer MLP. MultiSurv's discrete-time survival output is not
    used: the prognosis loss and risk score are TGMM's (Eq. 13-15), so only the fusion differs.
    Inputs:  z (B, 3, D); present (B, 3) bool
    Output:  FusionOutput (z_all (B, 7, D) with the fused feature in slot lab+ecg+echo)
    """

    def __init__(self, config: TGMMConfig):
        super().__init__()
        dim = config.dim
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(dim, dim), nn.ReLU()
        )

    def forward(self, z: Tensor, present: Tensor) -> FusionOutput:
        present = _check(z, present)
        lowest = torch.finfo(z.dtype).min
        pooled = torch.where(present[..., None], z, torch.full((), lowest, dtype=z.dtype, device=z.device)).amax(1)
        return _as_slots(self.mlp(pooled))


def build_fusion(config: TGMMConfig) -> nn.Module:
    """The fusion module named by ``config.fusion``."""
    return {"mffm": MedFlexFusion, "mean_cat": MeanCatFusion, "multisurv": MultiSurvFusion}[config.fusion](config)
