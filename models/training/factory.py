"""Build a TGMM model from its configuration (:class:`models.training.configuration.ModelConfig`).

Used by training (``models.training.loop``), feature caching (``workflow/scripts/encoder_features.py``) and the
explanations (``models.explain``), none of which needs the others.
"""

from __future__ import annotations

import torch

from models.encoders.ecg import STMEMEncoder
from models.encoders.echo import EchoPrimeEncoder
from models.encoders.text import TextEncoder
from models.multimodal import MultimodalTGMM
from models.training.configuration import ModelConfig

__all__ = ["build_model"]


def build_model(config: ModelConfig) -> MultimodalTGMM:
    """Encoders (frozen layers from their checkpoints, or random with ``encoder_seed``) + TGMM (global RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.encoder_seed)
        text = TextEncoder.from_config(config.text)
        ecg = STMEMEncoder(config.ecg)
        echo = EchoPrimeEncoder(config.echo)
    for encoder in (text, ecg, echo):
        encoder.proj.reset_parameters()  # trainable: initialised from the caller's (training) seed
    return MultimodalTGMM(text, ecg, echo, config.tgmm)
