"""The MARL encoders in front of TGMM: raw modality inputs -> (B, 3, D) features -> TGMM.

Trace of one patient: its lab text is tokenised by the text encoder's WordPiece tokenizer and encoded by
BERT ([CLS], projected to D); its (12, 2500) ECG by ST-MEM (crops + standardisation inside the encoder);
its (11, 16, H, W, 3) echo clips by EchoPrime's MViT (present views only, averaged, projected to D). The
three features and the present mask go to :class:`models.tgmm.TGMM`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from models.config import TGMMConfig, subset_mask
from models.encoders.ecg import STMEMEncoder
from models.encoders.echo import EchoPrimeEncoder
from models.encoders.text import TextEncoder
from models.tgmm import TGMM, TGMMOutput


class MultimodalTGMM(nn.Module):
    """Encoders + TGMM.

    batch keys (B patients):
        input_ids, attention_mask (B, L)  lab text tokens (text encoder's tokenizer)
        ecg (B, 12, 2500) float32 mV      ST-MEM input (stored records; cropping is the encoder's transform)
        echo (B, 11, F, H, W, 3) uint8, view_present (B, 11) bool
        present (B, 3) bool               which modalities the patient has (lab, ecg, echo)
    subset: the modalities the run may use (e.g. 'lab+echo'); the effective mask is subset AND present.
    An encoder whose modality is absent for the whole batch is not run.
    """

    def __init__(self, text: TextEncoder, ecg: STMEMEncoder, echo: EchoPrimeEncoder, config: TGMMConfig):
        super().__init__()
        self.text, self.ecg, self.echo = text, ecg, echo
        self.tgmm = TGMM(config, text.tokenizer, text.word_embeddings)

    def encode(self, batch: Mapping[str, Tensor], subset: str) -> tuple[Tensor, Tensor]:
        """(features (B, 3, D), present (B, 3))."""
        allowed = torch.tensor(subset_mask(subset), dtype=torch.bool)
        present = batch["present"].bool() & allowed.to(batch["present"].device)
        size = present.shape[0]
        dim = self.tgmm.config.dim
        device = present.device
        features = torch.zeros(size, 3, dim, device=device)
        if present[:, 0].any():
            features[:, 0] = self.text(batch["input_ids"], batch["attention_mask"]).pooled
        if present[:, 1].any():
            features[:, 1] = self.ecg(batch["ecg"])
        if present[:, 2].any():
            encoded = self.echo(batch["echo"], batch["view_present"])
            features[:, 2] = encoded.study
            present = present.clone()
            present[:, 2] &= encoded.present
        return features, present

    def forward(self, batch: Mapping[str, Tensor], subset: str, task: str) -> TGMMOutput:
        features, present = self.encode(batch, subset)
        return self.tgmm(features, present, task)

    def loss(self, outputs: TGMMOutput, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.tgmm.loss(outputs, batch)
