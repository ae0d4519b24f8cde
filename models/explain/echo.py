"""(d) Echo explanations: Grad-CAM++ over views x frames (Fig. 9; models/explain/__init__.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from torch import Tensor, nn

from models.explain.gradcam import gradcam_plusplus_maps
from models.explain.trained_run import ExplainedRun, fused_score, raw_batch, raw_vectors


class _EchoViews(nn.Module):
    """(V, 3, F, H, W) one patient's preprocessed present views -> (1,) score with lab and ECG vectors fixed."""

    def __init__(self, run: ExplainedRun, lab: Tensor, ecg: Tensor) -> None:
        super().__init__()
        self.run, self.lab, self.ecg = run, lab, ecg
        self.video = run.model.echo.video

    def forward(self, x: Tensor) -> Tensor:
        echo = self.video(x).mean(dim=0, keepdim=True)
        return fused_score(self.run, {"lab": self.lab, "ecg": self.ecg, "echo": echo})


def echo_gradcam(run: ExplainedRun, out_dir: str | Path, patients: pl.DataFrame) -> np.ndarray:
    """Grad-CAM++ over echo views x frames for ``patients``: (N, 11, F) float32, the map summed over each frame's
    pixels (a temporal token covers F / T' frames), zeros for absent views; EchoPrime's view order."""
    model = run.model
    batch = raw_batch(run, Path(out_dir), patients["subject_id"].to_list())
    fixed = raw_vectors(model, batch)
    video = model.echo.video
    block = video.blocks[-1]
    grid: dict[str, Any] = {}
    handle = block.register_forward_pre_hook(lambda _module, args: grid.__setitem__("thw", args[1]))

    def reshape(tokens: Tensor) -> Tensor:  # (V, 1 + T·H·W, C) -> (V, C, T, H, W), class token dropped
        t, h, w = grid["thw"]
        return tokens[:, 1:].reshape(tokens.shape[0], t, h, w, -1).permute(0, 4, 1, 2, 3)

    n, views, frames = batch["echo"].shape[:3]
    out = np.zeros((n, views, frames), dtype=np.float32)
    try:
        for i in range(n):
            present = batch["view_present"][i].bool()
            x = model.echo.preprocess(batch["echo"][i][present])  # (V, 3, F, H, W)
            wrapper = _EchoViews(run, fixed["lab"][i : i + 1], fixed["ecg"][i : i + 1])
            maps = gradcam_plusplus_maps(wrapper, block.norm1, reshape, x.clone())  # (V, T, H, W)
            per_token = maps.sum(axis=(2, 3))  # (V, T)
            per_frame = np.repeat(per_token, frames // per_token.shape[1], axis=1) / (frames // per_token.shape[1])
            out[i, present.numpy()] = per_frame
    finally:
        handle.remove()
    return out
