"""EchoPrime echo encoder (MARL, paper §4.2.1: Z_m = EchoPrime(Θ_m); docs/SIGNALS.md, Echo; docs/MODEL.md).

Facts about EchoPrime's video encoder, read in the public EchoPrime code (github.com/echonet/EchoPrime,
``echo_prime/model.py``: ``EchoPrime.__init__``, ``process_dicoms``, ``embed_videos``) and in
the key list the tests check (``echoprime-encoder.tsv``, docs/REFERENCE_DATA.md):

- the network is torchvision ``mvit_v2_s`` whose last head layer is replaced by ``Linear(768, 512)``;
  ``echo_prime_encoder.pt`` is its plain state dict (397 tensors, loaded strictly);
- one clip is 3 x 16 x 224 x 224 (channels, frames, height, width): 16 frames taken at stride 2 from frame 0;
- pixel values stay on the 0-255 scale and are normalised per channel with mean [29.110628, 28.076836, 29.096405]
  and std [47.989223, 46.456997, 47.20083]; the channels are in **BGR** order (the project's view classifier,
  ``hftri_mimic.echo.view_classifier``, documents the same finding and uses the same constants);
- every clip of a study is embedded on its own (N, 512); EchoPrime then combines clips with view-dependent
  weights for its report retrieval.  TGMM needs one study vector: here the mean over the present views, projected
  to 768 (docs/MODEL.md).

The project's echo store keeps, per study, the best clip of each of the 11 views as uint8 RGB
(11, 16, H, W, 3) and a view-present mask (``hftri_mimic.echo.stage``).  :class:`EchoPrimeEncoder` converts RGB
to BGR and normalises, runs only the present clips (one batch), and scatters their embeddings back.

torchvision's ``mvit_v2_s`` fixes its input size (``spatial_size=(224, 224)``, ``temporal_size=16``): its
relative position tables are sized from it, so it cannot run at the demo's 64 px.  The demo builds a small MViT
with torchvision's own ``MViT`` class (same block type, MViTv2 options as ``mvit_v2_s``: residual pooling,
relative positions, projection after attention) at the configured ``size``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models.video import mvit_v2_s
from torchvision.models.video.mvit import MSBlockConfig, MViT

from models.encoders.ecg import check_state_dict, read_checkpoint
from models.encoders.freezing import PartiallyFrozen, unfrozen_count

__all__ = [
    "ECHOPRIME_MEAN_BGR",
    "ECHOPRIME_STD_BGR",
    "N_VIEWS",
    "EchoEncoderConfig",
    "EchoEncoding",
    "EchoPrimeEncoder",
    "build_video_encoder",
    "load_echoprime",
]

log = logging.getLogger(__name__)

# EchoPrime's per-channel statistics on the 0-255 scale, channels in B, G, R order (echo_prime/model.py).
ECHOPRIME_MEAN_BGR: tuple[float, float, float] = (29.110628, 28.076836, 29.096405)
ECHOPRIME_STD_BGR: tuple[float, float, float] = (47.989223, 46.456997, 47.20083)
N_VIEWS = 11  # EchoPrime's view classes (hftri_mimic.echo.dicom.VIEWS)


@dataclass(frozen=True)
class EchoEncoderConfig:
    """Architecture, input and training of the echo encoder.

    ``arch="mvit_v2_s"``: EchoPrime's network (torchvision ``mvit_v2_s``, head -> ``embed_dim`` 512); needs
    ``size=224`` and ``frames=16``.  ``arch="mvit_small"``: a small MViTv2 for the CPU demo, built at ``size`` x
    ``size`` x ``frames``, with stages of ``small_channels`` channels, ``small_depths`` blocks and ``small_heads``
    heads (each new stage halves the spatial token grid, as ``mvit_v2_s`` does).  ``unfreeze_layers``: the last N
    MViT blocks plus the final norm, the 768 -> 512 head and the projection train; 0 = projection only; -1 = all.
    ``head_dropout`` and ``stochastic_depth_prob`` are torchvision's ``mvit_v2_s`` defaults.  Inputs are uint8 (or
    float on the 0-255 scale) RGB clips; ``channel_order`` is the order the network sees (BGR for EchoPrime).
    """

    arch: str = "mvit_v2_s"
    size: int = 224
    frames: int = 16
    embed_dim: int = 512
    proj_dim: int = 768
    n_views: int = N_VIEWS
    unfreeze_layers: int = 2
    checkpoint: str | None = None
    head_dropout: float = 0.5
    stochastic_depth_prob: float = 0.2
    channel_order: str = "BGR"
    mean: tuple[float, float, float] = ECHOPRIME_MEAN_BGR
    std: tuple[float, float, float] = ECHOPRIME_STD_BGR
    small_channels: tuple[int, ...] = (32, 64, 128)
    small_depths: tuple[int, ...] = (1, 2, 1)
    small_heads: tuple[int, ...] = (1, 2, 4)

    def __post_init__(self) -> None:
        if self.arch not in ("mvit_v2_s", "mvit_small"):
            raise ValueError(f"echo encoder arch must be 'mvit_v2_s' or 'mvit_small', got {self.arch!r}")
        if self.arch == "mvit_v2_s" and (self.size, self.frames) != (224, 16):
            raise ValueError(
                f"mvit_v2_s (EchoPrime) is built for 16 frames of 224 x 224 px, got {self.frames} x {self.size}; "
                "use arch='mvit_small' for other sizes"
            )
        if self.arch == "mvit_small":
            if not (len(self.small_channels) == len(self.small_depths) == len(self.small_heads) >= 1):
                raise ValueError("small_channels, small_depths and small_heads need the same (>= 1) length")
            if min(self.small_depths) < 1 or min(self.small_heads) < 1:
                raise ValueError("small_depths and small_heads must be >= 1")
            grid = self.size // 4
            if grid < 2 ** (len(self.small_channels) - 1) or self.size % 4 or self.frames < 2:
                raise ValueError(
                    f"size {self.size} px is too small for {len(self.small_channels)} stages "
                    "(the patch embedding divides it by 4, each later stage by 2); frames must be >= 2"
                )
        if self.channel_order not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be 'BGR' or 'RGB', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each and std must be positive")
        if self.unfreeze_layers < -1:
            raise ValueError(
                f"unfreeze_layers must be -1 (all), 0 (frozen) or a positive count, got {self.unfreeze_layers}"
            )


def _small_block_setting(config: EchoEncoderConfig) -> list[MSBlockConfig]:
    """MViTv2 blocks for the demo: the first block of every later stage widens the channels and halves the grid.

    Keys and values are pooled to a grid of about 4 x 4 tokens per frame (``stride_kv``), as ``mvit_v2_s`` pools
    them to 7 x 7 at 224 px; kernels 3 x 3 x 3 as in ``mvit_v2_s``.
    """
    blocks: list[MSBlockConfig] = []
    grid = config.size // 4  # tokens per side after the patch embedding (stride 4)
    previous = config.small_channels[0]
    for stage, (channels, depth, heads) in enumerate(
        zip(config.small_channels, config.small_depths, config.small_heads, strict=True)
    ):
        for j in range(depth):
            stride_q = [1, 2, 2] if stage > 0 and j == 0 else [1, 1, 1]
            kv = max(1, grid // 4)
            blocks.append(
                MSBlockConfig(
                    num_heads=heads,
                    input_channels=previous,
                    output_channels=channels,
                    kernel_q=[3, 3, 3],
                    kernel_kv=[3, 3, 3],
                    stride_q=stride_q,
                    stride_kv=[1, kv, kv],
                )
            )
            previous = channels
            if stride_q[1] == 2:
                grid //= 2
    return blocks


def build_video_encoder(config: EchoEncoderConfig) -> MViT:
    """A randomly initialised MViT (torchvision, ``weights=None``: nothing is downloaded) -> (N, embed_dim).

    For ``mvit_v2_s`` the head is built at its final size (``num_classes=embed_dim``), which gives the same keys and
    shapes as EchoPrime's ``head[-1] = Linear(768, 512)`` replacement.
    """
    if config.arch == "mvit_v2_s":
        return mvit_v2_s(
            weights=None,
            num_classes=config.embed_dim,
            dropout=config.head_dropout,
            stochastic_depth_prob=config.stochastic_depth_prob,
        )
    return MViT(
        spatial_size=(config.size, config.size),
        temporal_size=config.frames,
        block_setting=_small_block_setting(config),
        residual_pool=True,
        residual_with_cls_embed=False,
        rel_pos_embed=True,
        proj_after_attn=True,
        dropout=config.head_dropout,
        stochastic_depth_prob=config.stochastic_depth_prob,
        num_classes=config.embed_dim,
    )


class EchoEncoding(NamedTuple):
    """Output of :class:`EchoPrimeEncoder`.

    views:   (B, n_views, embed_dim) per-view EchoPrime embeddings, zeros for absent views
    study:   (B, proj_dim) Linear(embed_dim -> proj_dim) of the mean over present views; zeros if none is present
    present: (B,) bool, at least one view present
    """

    views: torch.Tensor
    study: torch.Tensor
    present: torch.Tensor


class EchoPrimeEncoder(PartiallyFrozen):
    """Echo encoder of MARL (paper §4.2.1): Z_m = W · mean_{v present} EchoPrime(clip_v) + b.

    Input:  clips (B, V, F, H, W, 3) uint8 RGB (or float on the 0-255 scale), V = 11 views, F = ``frames``,
            H = W = ``size``; view_present (B, V) bool.
    Output: :class:`EchoEncoding` (views (B, V, 512), study (B, proj_dim), present (B,)).
    Only the present clips are converted (RGB -> ``channel_order``, (x - mean) / std) and encoded, in one batch
    of shape (N_present, 3, F, H, W).
    """

    def __init__(self, config: EchoEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EchoEncoderConfig()
        self.video = build_video_encoder(config)
        self.proj = nn.Linear(config.embed_dim, config.proj_dim)
        order = [2, 1, 0] if config.channel_order == "BGR" else [0, 1, 2]
        self.register_buffer("channel_index", torch.tensor(order), persistent=False)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1, 1), persistent=False)
        if config.checkpoint is not None:
            self.load_echoprime(config.checkpoint)
        self.set_unfreeze(config.unfreeze_layers)

    # -- loading and freezing

    def load_echoprime(self, path: str | Path, state: Mapping[str, torch.Tensor] | None = None) -> EchoPrimeEncoder:
        """Load EchoPrime's ``echo_prime_encoder.pt`` (a plain state dict) into ``self.video``, strictly.

        Read with ``torch.load(weights_only=True)`` (unless ``state``, already read from ``path``, is given); a
        mismatch raises ValueError naming the missing, unexpected and shape-mismatched keys and the path.
        """
        state = read_checkpoint(path, unwrap=None) if state is None else state
        c = self.config
        check_state_dict(
            self.video, state, path=path, what=f"EchoPrime video encoder ({c.arch}, head -> {c.embed_dim})"
        )
        self.video.load_state_dict(state, strict=True)
        log.info("loaded EchoPrime encoder %s (%d tensors)", path, len(state))
        return self

    def set_unfreeze(self, unfreeze_layers: int) -> None:
        """Train the last ``unfreeze_layers`` MViT blocks + norm + head + projection; 0: projection only; -1: all."""
        blocks = list(self.video.blocks)
        n = unfrozen_count(unfreeze_layers, len(blocks))
        if unfreeze_layers == -1:
            self.apply_freezing([self], [])
        else:
            tail = [self.video.norm, self.video.head]
            frozen = [self.video.conv_proj, self.video.pos_encoding, *blocks[: len(blocks) - n]]
            trainable = [self.proj, *blocks[len(blocks) - n :]]
            self.apply_freezing(trainable + tail if n > 0 else trainable, frozen if n > 0 else frozen + tail)

    # -- forward

    def preprocess(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, F, H, W, 3) RGB on the 0-255 scale -> (N, 3, F, H, W) float32 in ``channel_order``, normalised."""
        x = clips.permute(0, 4, 1, 2, 3).float()  # (N, 3, F, H, W), RGB
        x = x.index_select(1, self.channel_index)
        return (x - self.mean) / self.std

    def embed_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, F, H, W, 3) RGB clips -> (N, embed_dim) EchoPrime embeddings."""
        return self.video(self.preprocess(clips))

    def forward(self, clips: torch.Tensor, view_present: torch.Tensor) -> EchoEncoding:
        """(B, V, F, H, W, 3) clips + (B, V) mask -> :class:`EchoEncoding` (see the class docstring)."""
        c = self.config
        if clips.ndim != 6 or clips.shape[-1] != 3:
            raise ValueError(f"expected clips (batch, views, frames, height, width, 3), got {tuple(clips.shape)}")
        b, v, f, h, w, _ = clips.shape
        if (v, f, h, w) != (c.n_views, c.frames, c.size, c.size):
            raise ValueError(
                f"echo clips are {v} views x {f} frames x {h} x {w} px; the encoder expects "
                f"{c.n_views} x {c.frames} x {c.size} x {c.size}"
            )
        present = view_present.to(device=clips.device, dtype=torch.bool)
        if present.shape != (b, v):
            raise ValueError(f"view_present must be ({b}, {v}), got {tuple(present.shape)}")
        rows, cols = present.nonzero(as_tuple=True)
        views = clips.new_zeros((b, v, c.embed_dim), dtype=torch.float32)
        if rows.numel():
            embedded = self.embed_clips(clips[rows, cols])  # (N_present, embed_dim)
            views = views.index_put((rows, cols), embedded.to(views.dtype))
        count = present.sum(dim=1)  # (B,)
        mean = views.sum(dim=1) / count.clamp_min(1).unsqueeze(1).to(views.dtype)
        any_view = count > 0
        study = self.proj(mean) * any_view.unsqueeze(1).to(views.dtype)
        return EchoEncoding(views=views, study=study, present=any_view)


def load_echoprime(path: str | Path, config: EchoEncoderConfig | None = None) -> EchoPrimeEncoder:
    """An :class:`EchoPrimeEncoder` (default: EchoPrime's ``mvit_v2_s``) with the checkpoint at ``path``."""
    state = read_checkpoint(path, unwrap=None)  # read first: a bad file fails before the model is built
    return EchoPrimeEncoder(config or EchoEncoderConfig()).load_echoprime(path, state)
