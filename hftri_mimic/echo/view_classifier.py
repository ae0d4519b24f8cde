"""Echo view classifier (docs/SIGNALS.md, Echo): a torchvision ConvNeXt that sorts every cine into EchoPrime's 11 views.

With the user's EchoPrime checkpoint the classifier is torchvision ``convnext_base`` whose last classifier layer is
replaced by ``Linear(1024, 11)``; ``view_classifier.pt`` is its plain state dict, the older Lightning
``view_classifier.ckpt`` holds the same keys under ``state_dict``, each prefixed ``model.``
(the key list the tests check: ``echoprime-view-classifier.tsv``, docs/REFERENCE_DATA.md).
For the demo a small ConvNeXt of the same family
(``convnext_mini``) is trained on the demo DICOMs and their ground-truth views.

EchoPrime's input, as read in the public EchoPrime code (github.com/echonet/EchoPrime: ``echo_prime/model.py``,
``EchoPrime.process_dicoms`` and ``EchoPrime.get_views``; ``utils/utils.py``, ``mask_outside_ultrasound`` and
``crop_and_scale``; the same steps in ``ViewClassificationDemo.ipynb``):

- the classifier sees the *first frame* of the clip that also feeds the video encoder, one 3 x 224 x 224 image;
- the DICOM pixels are treated as YUV/YBR and converted with OpenCV's ``COLOR_YUV2BGR`` inside the sector mask,
  so the channels reach the network in **BGR** order;
- each frame is centre-cropped to the output aspect ratio (square), then 10 % is cut from every side
  (``zoom=0.1``), then resized with ``cv2.INTER_CUBIC`` to 224 x 224 (uint8);
- values stay on the 0-255 scale and are normalised per channel (B, G, R) with
  mean ``[29.110628, 28.076836, 29.096405]`` and std ``[47.989223, 46.456997, 47.20083]``;
- the prediction is the argmax of the 11 logits, in the order of :data:`VIEWS` (EchoPrime's ``COARSE_VIEWS``).

:func:`preprocess_frames` takes frames as the echo stage prepares them (masked, RGB, square crop done upstream) and
performs the classifier-specific part: a centre square crop when the frames are not square, the cubic resize to
``input_size``, RGB -> BGR and the normalisation above.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import convnext
from tqdm import tqdm

from hftri_mimic.echo.dicom import VIEWS

__all__ = [
    "VARIANTS",
    "VIEWS",
    "ViewClassifierConfig",
    "build_view_classifier",
    "load_view_classifier",
    "predict_views",
    "preprocess_frames",
    "save_view_classifier",
    "train_view_classifier",
]

log = logging.getLogger(__name__)

# VIEWS: EchoPrime's 11 view classes, in the order of its classifier's outputs (``utils.COARSE_VIEWS``).

# EchoPrime's per-channel statistics on the 0-255 scale, channels in B, G, R order (see the module docstring).
ECHOPRIME_MEAN_BGR: tuple[float, float, float] = (29.110628, 28.076836, 29.096405)
ECHOPRIME_STD_BGR: tuple[float, float, float] = (47.989223, 46.456997, 47.20083)

# The demo-size ConvNeXt: same block, stem and head as torchvision's, 4 stages of 16/32/64/128 channels.
_MINI_BLOCKS: tuple[tuple[int, int | None, int], ...] = ((16, 32, 1), (32, 64, 1), (64, 128, 2), (128, None, 1))

VARIANTS: tuple[str, ...] = ("convnext_base", "convnext_tiny", "convnext_small", "convnext_large", "convnext_mini")
"""Known architectures: torchvision's ConvNeXt sizes plus the small demo network ``convnext_mini``."""

# Stem width and number of blocks in stage 3 (``features.5``) identify a ConvNeXt size in a state dict.
_SIGNATURES: dict[tuple[int, int], str] = {
    (96, 9): "convnext_tiny",
    (96, 27): "convnext_small",
    (128, 27): "convnext_base",
    (192, 27): "convnext_large",
    (16, 2): "convnext_mini",
}


@dataclass(frozen=True)
class ViewClassifierConfig:
    """Architecture and input of the view classifier.

    ``variant`` is ``convnext_base`` for EchoPrime's weights, ``convnext_mini`` for the CPU demo (channels
    16/32/64/128, depths 1/1/2/1; trains in about a minute at 64-112 px), or another torchvision ConvNeXt size.
    Frames are resized to ``input_size`` and normalised as EchoPrime does: 0-255 values in ``channel_order``
    (``BGR``) minus ``mean`` over ``std``.
    """

    variant: str = "convnext_base"
    num_classes: int = 11
    input_size: int = 224
    channel_order: str = "BGR"
    mean: tuple[float, float, float] = ECHOPRIME_MEAN_BGR
    std: tuple[float, float, float] = ECHOPRIME_STD_BGR

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown view classifier variant {self.variant!r}; expected one of {VARIANTS}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.input_size < 32:
            raise ValueError(f"input_size must be >= 32 px (ConvNeXt downsamples 32x), got {self.input_size}")
        if self.channel_order not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be 'BGR' or 'RGB', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each and std must be positive")


# --------------------------------------------------------------------------- model


def build_view_classifier(config: ViewClassifierConfig) -> nn.Module:
    """A randomly initialised torchvision ConvNeXt with a ``num_classes``-way last classifier layer.

    Never downloads anything: torchvision builders get ``weights=None``.  The head is built at its final size, which
    gives the same keys and shapes as EchoPrime's ``classifier[-1] = Linear(1024, 11)`` replacement.
    """
    if config.variant == "convnext_mini":
        blocks = [convnext.CNBlockConfig(cin, cout, n) for cin, cout, n in _MINI_BLOCKS]
        return convnext.ConvNeXt(blocks, stochastic_depth_prob=0.0, num_classes=config.num_classes)
    builder = getattr(convnext, config.variant)
    return builder(weights=None, num_classes=config.num_classes)


def _describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """A guess at the architecture behind a state dict, for error messages."""
    stem = state.get("features.0.0.weight")
    head = state.get("classifier.2.weight")
    if stem is None or stem.ndim != 4:
        return "does not look like a torchvision ConvNeXt state dict (no 'features.0.0.weight' stem)"
    n_stage3 = len({k.split(".")[2] for k in state if k.startswith("features.5.") and k.count(".") >= 3})
    variant = _SIGNATURES.get((int(stem.shape[0]), n_stage3), f"a ConvNeXt with stem width {int(stem.shape[0])}")
    classes = f"{int(head.shape[0])} classes" if head is not None and head.ndim == 2 else "no 'classifier.2' head"
    return f"looks like {variant} with {classes}"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"view classifier checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds Python objects beyond tensors, which torch.load(weights_only=True) refuses to unpickle. "
            "If you trust the file, extract its state dict once, e.g. "
            "torch.save({k.removeprefix('model.'): v for k, v in "
            "torch.load(path, weights_only=False)['state_dict'].items()}, 'view_classifier.pt'), "
            f"and point the workflow at the .pt file. ({err})"
        ) from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        # Lightning checkpoint: the LightningModule held the ConvNeXt as ``self.model``.
        obj = {(k[len("model.") :] if k.startswith("model.") else k): v for k, v in obj["state_dict"].items()}
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{path} is neither a plain state dict (name -> tensor) nor a Lightning checkpoint with a 'state_dict'"
        )
    return dict(obj)


def _key_report(title: str, keys: list[str], show: int = 5) -> str:
    more = f" and {len(keys) - show} more" if len(keys) > show else ""
    return f"{len(keys)} {title}: " + ", ".join(keys[:show]) + more


def load_view_classifier(path: Path | str, config: ViewClassifierConfig) -> nn.Module:
    """Load a view classifier with a strict key and shape match; the model comes back in eval mode on the CPU.

    ``path`` is a plain state dict (``.pt``, EchoPrime's ``view_classifier.pt`` or :func:`save_view_classifier`'s
    output) or a Lightning checkpoint (``.ckpt``: a dict whose ``state_dict`` keys are prefixed ``model.``).  It is
    read with ``torch.load(weights_only=True, map_location='cpu')``.  Missing keys, unexpected keys and shape
    mismatches raise a ValueError that names the file, the configured variant, the offending keys (first few,
    with counts) and what the file looks like instead.
    """
    path = Path(path)
    state = _read_state_dict(path)
    model = build_view_classifier(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        problems = [
            _key_report(title, keys)
            for title, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("keys with a different shape", mismatched),
            )
            if keys
        ]
        raise ValueError(
            f"view classifier checkpoint {path} does not match variant={config.variant!r} with "
            f"num_classes={config.num_classes}: " + "; ".join(problems) + f". The file {_describe_state_dict(state)}: "
            "set the view classifier variant/num_classes to match it, or give the right file."
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def save_view_classifier(model: nn.Module, path: Path | str) -> None:
    """Write the model's plain state dict (CPU tensors) to ``path`` atomically, for :func:`load_view_classifier`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------- input


def _check_frames(frames_rgb: np.ndarray) -> None:
    if not isinstance(frames_rgb, np.ndarray) or frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3:
        shape = getattr(frames_rgb, "shape", None)
        raise ValueError(f"frames must be an (N, H, W, 3) RGB array, got shape {shape}")
    if frames_rgb.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got {frames_rgb.dtype}")


def _to_model_pixels(frames_rgb: np.ndarray, config: ViewClassifierConfig) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, S, S) uint8 in the model's channel order, centre-cropped and resized."""
    _check_frames(frames_rgb)
    n, h, w, _ = frames_rgb.shape
    side, size = min(h, w), config.input_size
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = frames_rgb[:, y0 : y0 + side, x0 : x0 + side]
    if side != size:
        out = np.empty((n, size, size, 3), dtype=np.uint8)
        for i in range(n):
            # EchoPrime's crop_and_scale resizes uint8 frames with cv2.INTER_CUBIC.
            out[i] = cv2.resize(np.ascontiguousarray(square[i]), (size, size), interpolation=cv2.INTER_CUBIC)
        square = out
    if config.channel_order == "BGR":
        square = square[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(square)).permute(0, 3, 1, 2).contiguous()


def _normalise(pixels: torch.Tensor, config: ViewClassifierConfig) -> torch.Tensor:
    """0-255 pixels (N, 3, S, S), any dtype -> float32 (x - mean) / std per channel."""
    mean = torch.tensor(config.mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() - mean) / std


def preprocess_frames(frames_rgb: np.ndarray, config: ViewClassifierConfig) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, input_size, input_size) float32 normalised as the classifier expects.

    Non-square frames are centre-cropped to a square; frames are resized with bicubic interpolation (OpenCV, as
    EchoPrime), put in ``config.channel_order`` (BGR for EchoPrime) and normalised with ``config.mean``/``std``.
    """
    return _normalise(_to_model_pixels(frames_rgb, config), config)


@torch.no_grad()
def predict_views(
    model: nn.Module, frames_rgb: np.ndarray, config: ViewClassifierConfig, batch_size: int = 64
) -> np.ndarray:
    """Softmax view probabilities (N, num_classes) float32 for (N, H, W, 3) uint8 RGB frames, in :data:`VIEWS` order.

    Preprocessing runs per batch, so long lists of frames do not sit in memory as float tensors.  The model is put
    in eval mode and runs on whatever device its parameters live on.
    """
    _check_frames(frames_rgb)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    device = next(model.parameters()).device
    out = np.empty((len(frames_rgb), config.num_classes), dtype=np.float32)
    for start in range(0, len(frames_rgb), batch_size):
        x = preprocess_frames(frames_rgb[start : start + batch_size], config).to(device)
        logits = model(x)
        if logits.shape[1] != config.num_classes:
            raise ValueError(f"model gives {logits.shape[1]} outputs, config expects num_classes={config.num_classes}")
        out[start : start + len(x)] = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return out


# --------------------------------------------------------------------------- training


def _augment(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light augmentation of 0-255 float pixels (B, 3, S, S): small random affine (rotation ±8°, scale 0.9-1.1,
    shift ±6 %, black fill like the masked background) and brightness x0.8-1.2."""
    b = pixels.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, generator=gen)

    angle = uniform(-8.0, 8.0) * (math.pi / 180.0)
    scale = uniform(0.9, 1.1)
    tx, ty = uniform(-0.12, 0.12), uniform(-0.12, 0.12)  # grid units: 2 = full width, so ±6 %
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    moved = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (moved * uniform(0.8, 1.2).view(b, 1, 1, 1)).clamp_(0.0, 255.0)


def _split(labels: np.ndarray, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train / held-out indices (sklearn), unstratified when some class is too rare to stratify."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    if holdout_fraction <= 0:
        return index, index[:0]
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    n_held = math.ceil(holdout_fraction * len(labels))
    stratify = labels if counts.min() >= 2 and len(counts) <= min(n_held, len(labels) - n_held) else None
    if stratify is None:
        log.warning("some view has fewer than 2 frames (or the held-out set is tiny): unstratified split")
    train, held = train_test_split(index, test_size=holdout_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(held)


def _warmup_cosine(total_steps: int) -> Callable[[int], float]:
    warmup = max(1, total_steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return factor


def train_view_classifier(
    frames_rgb: np.ndarray,
    labels: np.ndarray,
    config: ViewClassifierConfig,
    *,
    epochs: int = 8,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    threads: int = 2,
) -> tuple[nn.Module, dict]:
    """Train a view classifier from scratch on (N, H, W, 3) uint8 RGB frames with labels 0..num_classes-1.

    Stratified held-out split by ``seed`` (sklearn ``train_test_split``), AdamW (weight decay 0.05) with a linear
    warm-up over the first 10 % of steps and a cosine decay, light random affine / brightness augmentation, cross
    entropy.  On the CPU the result is identical for a seed and thread count (``torch.manual_seed``, a seeded
    generator for shuffling and augmentation, ``torch.use_deterministic_algorithms``); global torch settings are
    restored afterwards.

    Returns:
        The model in eval mode, and metrics: ``heldout_accuracy`` (None without a held-out set), ``n_train``,
        ``n_heldout``, ``per_view_accuracy`` ({view: accuracy, None where the held-out set has no frame of it}),
        ``epochs``, ``variant``, ``input_size``, ``seconds``, ``final_train_loss``.
    """
    _check_frames(frames_rgb)
    labels = np.asarray(labels)
    if labels.shape != (len(frames_rgb),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {len(frames_rgb)} integers, got shape {labels.shape} dtype {labels.dtype}")
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= config.num_classes:
        raise ValueError(f"labels must lie in 0..{config.num_classes - 1} (indices into VIEWS)")
    if epochs < 1 or batch_size < 1 or not 0 <= holdout_fraction < 1:
        raise ValueError("need epochs >= 1, batch_size >= 1 and 0 <= holdout_fraction < 1")

    t0 = time.perf_counter()
    train_idx, held_idx = _split(labels.astype(np.int64), holdout_fraction, seed)
    names = VIEWS if config.num_classes == len(VIEWS) else tuple(str(i) for i in range(config.num_classes))

    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = build_view_classifier(config)
        pixels = _to_model_pixels(frames_rgb[train_idx], config)  # uint8: small in memory
        targets = torch.from_numpy(labels[train_idx].astype(np.int64))
        steps_per_epoch = math.ceil(len(train_idx) / batch_size)
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _warmup_cosine(epochs * steps_per_epoch))
        progress = tqdm(range(epochs), desc=f"view classifier ({config.variant})", unit="epoch")
        loss_mean = float("nan")
        for _ in progress:
            model.train()
            order = torch.randperm(len(train_idx), generator=gen)
            loss_sum, correct = 0.0, 0
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                x = _normalise(_augment(pixels[batch].float(), gen), config)
                y = targets[batch]
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                loss_sum += float(loss.detach()) * len(batch)
                correct += int((logits.argmax(1) == y).sum())
            loss_mean = loss_sum / len(order)
            progress.set_postfix(loss=f"{loss_mean:.3f}", train_acc=f"{correct / len(order):.3f}")
        model.eval()

        heldout_accuracy, per_view = None, dict.fromkeys(names)
        if len(held_idx):
            predicted = predict_views(model, frames_rgb[held_idx], config, batch_size=batch_size).argmax(1)
            truth = labels[held_idx]
            heldout_accuracy = float((predicted == truth).mean())
            for k, name in enumerate(names):
                if (truth == k).any():
                    per_view[name] = float((predicted[truth == k] == k).mean())
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)

    metrics = {
        "heldout_accuracy": heldout_accuracy,
        "n_train": len(train_idx),
        "n_heldout": len(held_idx),
        "per_view_accuracy": per_view,
        "epochs": epochs,
        "variant": config.variant,
        "input_size": config.input_size,
        "seconds": round(time.perf_counter() - t0, 2),
        "final_train_loss": loss_mean,
    }
    log.info("view classifier %s: held-out accuracy %s on %d frames", config.variant, heldout_accuracy, len(held_idx))
    return model, metrics
