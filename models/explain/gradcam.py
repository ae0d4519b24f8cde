"""Grad-CAM++ maps with pytorch-grad-cam's hooks and weights, kept un-normalised (models/explain/__init__.py)."""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

# --------------------------------------------------------------------------- (d) Grad-CAM++


def gradcam_plusplus_maps(model: nn.Module, layer: nn.Module, reshape, inputs: Tensor) -> np.ndarray:
    """Un-normalised Grad-CAM++ maps of ``model``'s summed (B,) scores w.r.t. ``layer``: ReLU(Σ_k w_k A_k) with
    pytorch-grad-cam's hooks and ``GradCAMPlusPlus`` weights. ``reshape`` turns the layer output into (N, C, ...)."""
    from pytorch_grad_cam import GradCAMPlusPlus

    cam = GradCAMPlusPlus(model=model, target_layers=[layer], reshape_transform=reshape)
    try:
        score = cam.activations_and_grads(inputs.requires_grad_(True))
        model.zero_grad()
        score.sum().backward()
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        maps = cam.get_cam_image(inputs, layer, None, activations, grads)
    finally:
        cam.activations_and_grads.release()
    return np.maximum(maps, 0.0)
