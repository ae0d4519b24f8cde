"""Partial freezing shared by the three MARL encoders (``unfreeze_layers``, docs/MODEL.md)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def unfrozen_count(unfreeze_layers: int, n_layers: int) -> int:
    """How many of the last layers train: -1 means all of them."""
    if unfreeze_layers < -1:
        raise ValueError(f"unfreeze_layers must be >= -1, got {unfreeze_layers}")
    return n_layers if unfreeze_layers == -1 else min(unfreeze_layers, n_layers)


class PartiallyFrozen(nn.Module):
    """An encoder whose listed modules train while the rest is frozen.

    Frozen modules also stay in eval mode whatever ``train()`` is asked (no dropout or stochastic depth in
    a fixed feature extractor), so that their features are the same in training and evaluation.
    """

    def __init__(self) -> None:
        super().__init__()
        self._frozen: list[nn.Module] = []

    def apply_freezing(self, trainable: Sequence[nn.Module], frozen: Sequence[nn.Module]) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        for module in trainable:
            for p in module.parameters():
                p.requires_grad_(True)
        self._frozen = list(frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self
