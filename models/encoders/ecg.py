"""ST-MEM ECG encoder (MARL, paper §4.2.1: Z_s = ST-MEM(Θ_s); docs/SIGNALS.md, ECG; docs/MODEL.md).

ST-MEM (Na et al., ICLR 2024) is a ViT over single-lead patches.  Facts about the released model, read in the
public ST-MEM code (github.com/bakqui/ST-MEM: ``models/encoder/st_mem_vit.py``, ``models/encoder/vit.py``,
``util/transforms.py``, ``configs/downstream/st_mem.yaml``, ``main_downstream.py``, ``engine_downstream.py``)
and in the key list the tests check (``st-mem-vit-base.tsv``, docs/REFERENCE_DATA.md); the module below is
written for this project:

- ViT-B/75: width 768, depth 12, 12 heads of 64 channels (``dim_head`` 64, qkv bias), MLP 3072 with GELU,
  pre-norm blocks (``blockN.attn.norm``/``blockN.attn.fn``, ``blockN.ff.norm``/``blockN.ff.fn``), input 12 x 2250
  at 250 Hz, patch 75 samples -> 30 patches per lead.
- Patch embedding ``to_patch_embedding``: split each lead into patches (index 0, no weights), LayerNorm(75),
  Linear(75, width), LayerNorm(width).  Every lead is its own token sequence ``[SEP] p_1 ... p_30 [SEP]``.
- ``pos_embedding`` (1, 30 + 2, width): index 0 is added to the left SEP, 1..n to the patches, the last index to
  the right SEP; the same positions serve every lead.  ``sep_embedding`` (width) is one shared SEP token.
  ``lead_embeddings.{0..11}`` (width each) is added to every token of its lead, SEPs included.
- All 12 x 32 tokens go through the blocks together (full spatio-temporal attention).
- Output: the SEP tokens are dropped, the remaining 12 x 30 tokens are **mean-pooled**, then LayerNorm ``norm``
  (pool first, normalise after), then the classification ``head`` (absent here: the encoder ignores ``head.*``).
- The checkpoint holds the state dict under ``ckpt["model"]``; ST-MEM's fine-tuning drops ``head.*`` and
  loads the rest.
- Input transform: training ``random_crop(2250)``, evaluation ``n_crop(2250, 3)`` whose starts are
  ``range(0, T - 2250 + 1, (T - 2250) // 2)`` = 0, 125, 250 for T = 2500; then ``standardize`` over axes
  (-1, -2), i.e. one mean and one (population) std per crop over all leads and time, output 0 where std = 0.
  ST-MEM averages the head's logits over the three crops; here the three *embeddings* are averaged (docs/SIGNALS.md,
  ECG), before the projection, which is affine, so the projected embedding is the same either way.

The band-pass filtering and resampling to 250 Hz happen in the dataset stage (``hftri_mimic.ecg.signal``); this module
only crops and standardises (docs/SIGNALS.md, ECG: "cropping ... and per-record standardisation belong to the model's
input transform").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from models.encoders.freezing import PartiallyFrozen, unfrozen_count

__all__ = [
    "ST_MEM_LEADS",
    "STMEMConfig",
    "STMEMEncoder",
    "STMEMInputTransform",
    "STMEMViT",
    "check_state_dict",
    "load_st_mem",
    "read_checkpoint",
]

log = logging.getLogger(__name__)

ST_MEM_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
"""Lead order of ST-MEM's input (and of the project's ECG store, ``hftri_mimic.ecg.signal``)."""


@dataclass(frozen=True)
class STMEMConfig:
    """Size of the ST-MEM ViT, its projection and its input transform.

    The defaults are ST-MEM ViT-B/75, whose state dict matches ``st-mem-vit-base.tsv`` exactly.  The CPU demo uses
    e.g. ``width=64, depth=2, heads=4``.  ``dim_head`` defaults to ``width // heads`` (64 for ViT-B, as ST-MEM);
    ``mlp_ratio`` gives the MLP width (4 -> 3072).  ``unfreeze_layers``: the last N transformer blocks (plus the final
    LayerNorm and the projection) are trained, everything before them is frozen; 0 = only the projection trains;
    -1 = everything trains.  ``checkpoint``: an ST-MEM encoder file to load, or None for random initialisation.
    ``record_len`` is the stored record length (10 s at 250 Hz); ``eval_crops`` crops are averaged in evaluation.
    """

    num_leads: int = 12
    seq_len: int = 2250
    patch_size: int = 75
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    dim_head: int | None = None
    qkv_bias: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    proj_dim: int = 768
    unfreeze_layers: int = 2
    checkpoint: str | None = None
    record_len: int = 2500
    eval_crops: int = 3
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.seq_len % self.patch_size:
            raise ValueError(f"seq_len ({self.seq_len}) must be a multiple of patch_size ({self.patch_size})")
        if self.dim_head is None and self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads}) unless dim_head is set")
        if min(self.num_leads, self.width, self.depth, self.heads, self.proj_dim) < 1:
            raise ValueError("num_leads, width, depth, heads and proj_dim must be >= 1")
        if self.unfreeze_layers < -1:
            raise ValueError(
                f"unfreeze_layers must be -1 (all), 0 (frozen) or a positive count, got {self.unfreeze_layers}"
            )
        if self.record_len < self.seq_len:
            raise ValueError(f"record_len ({self.record_len}) must be >= seq_len ({self.seq_len})")
        if self.eval_crops < 1:
            raise ValueError(f"eval_crops must be >= 1, got {self.eval_crops}")

    @property
    def head_dim(self) -> int:
        return self.dim_head if self.dim_head is not None else self.width // self.heads

    @property
    def num_patches(self) -> int:
        return self.seq_len // self.patch_size


# --------------------------------------------------------------------------- the ViT (checkpoint layout)


class _Patchify(nn.Module):
    """(B, C, n * p) -> (B, C, n, p): each lead cut into consecutive patches (no weights: key index 0)."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        if t % self.patch_size:
            raise ValueError(f"ECG length {t} is not a multiple of the patch size {self.patch_size}")
        return x.reshape(b, c, t // self.patch_size, self.patch_size)


class _PreNorm(nn.Module):
    """``fn(LayerNorm(x))``; submodule names ``norm`` and ``fn`` are those of the checkpoint."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class _Attention(nn.Module):
    """Multi-head self-attention softmax(q kᵀ / sqrt(d_head)) v over all tokens; (B, N, W) -> (B, N, W)."""

    def __init__(self, width: int, heads: int, dim_head: int, qkv_bias: bool, dropout: float, attn_dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.to_qkv = nn.Linear(width, 3 * inner, bias=qkv_bias)
        # ST-MEM keeps no output projection only in the degenerate case of one head as wide as the model.
        if heads == 1 and dim_head == width:
            self.to_out = nn.Identity()
        else:
            self.to_out = nn.Sequential(nn.Linear(inner, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # each (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _FeedForward(nn.Module):
    """Linear(W, H) -> GELU -> Dropout -> Linear(H, W) -> Dropout; ``net.0`` and ``net.3`` hold the weights."""

    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class STMEMBlock(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)), with optional stochastic depth."""

    def __init__(self, config: STMEMConfig, drop_path: float) -> None:
        super().__init__()
        w = config.width
        self.attn = _PreNorm(
            w, _Attention(w, config.heads, config.head_dim, config.qkv_bias, config.dropout, config.attn_dropout)
        )
        self.ff = _PreNorm(w, _FeedForward(w, round(w * config.mlp_ratio), config.dropout))
        self.drop_path1 = StochasticDepth(drop_path, "row")
        self.drop_path2 = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(x))
        return x + self.drop_path2(self.ff(x))


class STMEMViT(nn.Module):
    """The ST-MEM ViT; ``state_dict()`` has exactly the keys and shapes of ST-MEM's ``ckpt["model"]`` minus ``head``.

    Input:  x (B, C, T) standardised ECG, C <= num_leads leads in ST-MEM order, T a multiple of patch_size with
            T / patch_size <= num_patches (2250 samples -> 30 patches).
    Output: forward -> (B, width): LayerNorm(mean over the C x n patch tokens), SEP tokens excluded;
            forward_tokens -> (B, C, n, width): the patch tokens after the last block (before ``norm``).
    """

    def __init__(self, config: STMEMConfig) -> None:
        super().__init__()
        self.config = config
        w, p = config.width, config.patch_size
        self.to_patch_embedding = nn.Sequential(_Patchify(p), nn.LayerNorm(p), nn.Linear(p, w), nn.LayerNorm(w))
        self.pos_embedding = nn.Parameter(torch.empty(1, config.num_patches + 2, w))
        self.sep_embedding = nn.Parameter(torch.empty(w))
        self.lead_embeddings = nn.ParameterList(nn.Parameter(torch.empty(w)) for _ in range(config.num_leads))
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        for i in range(config.depth):
            self.add_module(f"block{i}", STMEMBlock(config, rates[i]))
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(w)
        # Random initialisation (no checkpoint): ViT-style truncated normal for the learned embeddings.
        for param in (self.pos_embedding, self.sep_embedding, *self.lead_embeddings):
            nn.init.trunc_normal_(param, std=0.02)

    @property
    def blocks(self) -> list[STMEMBlock]:
        """The transformer blocks in order (``block0`` .. ``block{depth-1}``)."""
        return [getattr(self, f"block{i}") for i in range(self.config.depth)]

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, n, width) patch tokens after the last block, SEP tokens removed, before ``norm``."""
        if x.ndim != 3:
            raise ValueError(f"ST-MEM expects (batch, leads, samples), got shape {tuple(x.shape)}")
        b, c, _ = x.shape
        if c > self.config.num_leads:
            raise ValueError(f"{c} leads exceed the {self.config.num_leads} lead embeddings")
        tokens = self.to_patch_embedding(x)  # (B, C, n, W)
        n = tokens.shape[2]
        if n > self.config.num_patches:
            raise ValueError(
                f"{n} patches exceed the {self.config.num_patches} positions (seq_len {self.config.seq_len})"
            )
        pos = self.pos_embedding[0]  # (n_max + 2, W)
        tokens = tokens + pos[1 : n + 1]
        left = (self.sep_embedding + pos[0]).expand(b, c, 1, -1)
        right = (self.sep_embedding + pos[-1]).expand(b, c, 1, -1)
        tokens = torch.cat([left, tokens, right], dim=2)  # (B, C, n + 2, W)
        leads = torch.stack(list(self.lead_embeddings[:c]))  # (C, W)
        tokens = tokens + leads[None, :, None, :]
        h = self.dropout(tokens.reshape(b, c * (n + 2), -1))
        for block in self.blocks:
            h = block(h)
        return h.reshape(b, c, n + 2, -1)[:, :, 1:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, width): mean over all patch tokens of all leads, then LayerNorm (as ST-MEM)."""
        return self.norm(self.forward_tokens(x).mean(dim=(1, 2)))


# --------------------------------------------------------------------------- input transform


class STMEMInputTransform:
    """Crop and standardise stored records as ST-MEM's fine-tuning does (docs/SIGNALS.md, ECG).

    Input:  x (B, C, T) float, T >= crop_len (stored records: 12 x 2500 at 250 Hz, band-passed).
    Output: (B, K, C, crop_len) float32, K = 1 in training (one uniformly random start in [0, T - crop_len] per
            record, drawn from ``generator``) and K = ``eval_crops`` in evaluation (evenly spaced starts
            0, (T - L) // (K - 1), ...: 0, 125, 250 for 2500 -> 2250; K = 1 gives the centre crop; a record of
            exactly crop_len samples gives one crop).
    Each crop is standardised on its own: one mean and one population std over all leads and time
    ((x - mean) / std); a crop whose std is <= ``eps`` (a flat record) becomes all zeros, as ST-MEM's
    ``Standardize`` returns 0 where std = 0.  Cropping happens before standardisation, as in ST-MEM.
    """

    def __init__(self, crop_len: int = 2250, eval_crops: int = 3, eps: float = 1e-6) -> None:
        if crop_len < 1 or eval_crops < 1 or eps < 0:
            raise ValueError("crop_len and eval_crops must be >= 1 and eps >= 0")
        self.crop_len = crop_len
        self.eval_crops = eval_crops
        self.eps = eps

    def eval_starts(self, length: int) -> list[int]:
        """Evenly spaced crop starts for a record of ``length`` samples (evaluation)."""
        self._check_length(length)
        spare = length - self.crop_len
        if spare == 0:
            return [0]  # a record of exactly crop_len samples: one crop, not K copies of it
        if self.eval_crops == 1:
            return [spare // 2]
        step = spare // (self.eval_crops - 1)
        return [i * step for i in range(self.eval_crops)]

    def crop(self, x: torch.Tensor, *, training: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, T) -> (B, K, C, crop_len) crops, not standardised."""
        if x.ndim != 3:
            raise ValueError(f"expected (batch, leads, samples), got shape {tuple(x.shape)}")
        b, _, t = x.shape
        self._check_length(t)
        if not training:
            return torch.stack([x[..., s : s + self.crop_len] for s in self.eval_starts(t)], dim=1)
        device = generator.device if generator is not None else torch.device("cpu")
        starts = torch.randint(0, t - self.crop_len + 1, (b,), generator=generator, device=device).to(x.device)
        index = starts[:, None] + torch.arange(self.crop_len, device=x.device)  # (B, L)
        crops = torch.gather(x, 2, index[:, None, :].expand(-1, x.shape[1], -1))
        return crops[:, None]

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C, L) -> same shape: per crop (x - mean) / std over the last two axes; 0 where std <= eps."""
        x = x.float()
        mean = x.mean(dim=(-1, -2), keepdim=True)
        std = x.std(dim=(-1, -2), keepdim=True, unbiased=False)
        flat = std <= self.eps
        return torch.where(flat, torch.zeros_like(x), (x - mean) / torch.where(flat, torch.ones_like(std), std))

    def __call__(self, x: torch.Tensor, *, training: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.standardise(self.crop(x, training=training, generator=generator))

    def _check_length(self, length: int) -> None:
        if length < self.crop_len:
            raise ValueError(f"ECG record has {length} samples, fewer than the crop length {self.crop_len}")


# --------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | Path, *, unwrap: str | None = "model") -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file, read with ``torch.load(weights_only=True)`` on the CPU.

    When the file holds a dict with key ``unwrap`` (ST-MEM: ``"model"``), that entry is the state dict; otherwise the
    file itself must be the state dict.  Raises FileNotFoundError or ValueError naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error names the refused global; keep it in the message
        raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint: {exc}") from exc
    if isinstance(obj, Mapping) and unwrap is not None and unwrap in obj:
        obj = obj[unwrap]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{path}: expected a state dict of tensors (or one under {unwrap!r}), got {type(obj).__name__}"
        )
    return dict(obj)


def _listed(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, path: str | Path, what: str
) -> dict[str, torch.Tensor]:
    """Strict comparison of ``state`` with ``model.state_dict()``: same keys, same shapes.

    Returns ``state`` as a dict when it matches; otherwise raises ValueError naming ``path``, ``what`` was expected,
    and every missing, unexpected and shape-mismatched key.
    """
    own = model.state_dict()
    missing = own.keys() - state.keys()
    unexpected = state.keys() - own.keys()
    shapes = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in sorted(own.keys() & state.keys())
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listed(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch: {_listed(shapes)}")
        raise ValueError(f"{path}: checkpoint does not match {what}; " + "; ".join(parts))
    return dict(state)


# --------------------------------------------------------------------------- the MARL encoder


class STMEMEncoder(PartiallyFrozen):
    """ECG encoder of MARL (paper §4.2.1): Z_s = W · ST-MEM(Θ_s) + b.

    Input:  x (B, 12, T) float ECG at 250 Hz in ST-MEM lead order, T >= 2250 (stored records: T = 2500).
            ``forward`` applies :class:`STMEMInputTransform`: in training one random 2250-sample crop per record
            (``generator`` makes it reproducible), in evaluation the three evenly spaced crops, whose ViT embeddings
            are averaged; every crop is standardised.  (B, 12, 2250) input is used whole.
    Output: (B, proj_dim) ECG embedding: Linear(width -> proj_dim) of the mean-pooled, normalised ViT output.
    ``token_features`` gives (B, 12 * n, proj_dim) per-patch features of one crop (ViT tokens, LayerNorm, projection).
    """

    def __init__(self, config: STMEMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or STMEMConfig()
        self.vit = STMEMViT(config)
        self.proj = nn.Linear(config.width, config.proj_dim)
        self.transform = STMEMInputTransform(config.seq_len, config.eval_crops, config.eps)
        if config.checkpoint is not None:
            self.load_st_mem(config.checkpoint)
        self.set_unfreeze(config.unfreeze_layers)

    # -- loading and freezing

    def load_st_mem(self, path: str | Path, state: Mapping[str, torch.Tensor] | None = None) -> STMEMEncoder:
        """Load an ST-MEM encoder checkpoint into ``self.vit`` with a strict key and shape match.

        The file is read with ``torch.load(weights_only=True)`` (unless ``state``, already read from ``path``, is
        given); ``ckpt["model"]`` is used when present (ST-MEM's layout), ``head.*`` keys (a fine-tuned
        classification head) are ignored.  Any other difference raises ValueError naming the missing, unexpected
        and shape-mismatched keys and the path.
        """
        state = read_checkpoint(path, unwrap="model") if state is None else state
        ignored = sorted(k for k in state if k.startswith("head."))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        check_state_dict(self.vit, state, path=path, what=f"ST-MEM ViT ({self._describe()})")
        self.vit.load_state_dict(state, strict=True)
        log.info("loaded ST-MEM encoder %s (%d tensors; ignored %s)", path, len(state), ignored or "nothing")
        return self

    def _describe(self) -> str:
        c = self.config
        return f"width {c.width}, depth {c.depth}, heads {c.heads}, {c.num_leads} leads, seq_len {c.seq_len}"

    def set_unfreeze(self, unfreeze_layers: int) -> None:
        """Train the last ``unfreeze_layers`` blocks + final norm + projection; 0: projection only; -1: all."""
        blocks = self.vit.blocks
        n = unfrozen_count(unfreeze_layers, len(blocks))
        if unfreeze_layers == -1:
            self.apply_freezing([self], [])
        else:
            trainable = [self.proj, *blocks[len(blocks) - n :]] + ([self.vit.norm] if n > 0 else [])
            self.apply_freezing(trainable, [self.vit.to_patch_embedding, self.vit.dropout, *blocks[: len(blocks) - n]])

    # -- forward

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, seq_len) already cropped and standardised -> (B, proj_dim)."""
        return self.proj(self.vit(x))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 12, T) stored ECG -> (B, proj_dim); crops per ``self.training`` (see the class docstring)."""
        crops = self.transform(x, training=self.training, generator=generator)  # (B, K, C, L)
        b, k = crops.shape[:2]
        pooled = self.vit(crops.flatten(0, 1)).reshape(b, k, -1).mean(dim=1)
        return self.proj(pooled)

    def token_features(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 12, T) -> (B, 12 * n, proj_dim): per-patch features of one crop (random in training, centre in eval)."""
        if self.training:
            crops = self.transform(x, training=True, generator=generator)[:, 0]
        else:
            starts = self.transform.eval_starts(x.shape[-1])
            start = starts[len(starts) // 2]
            crops = self.transform.standardise(x[..., start : start + self.config.seq_len])
        tokens = self.vit.forward_tokens(crops)  # (B, C, n, W)
        return self.proj(self.vit.norm(tokens.flatten(1, 2)))


def load_st_mem(path: str | Path, config: STMEMConfig | None = None) -> STMEMEncoder:
    """An :class:`STMEMEncoder` at ``config``'s size (default ViT-B/75) with the ST-MEM checkpoint at ``path``."""
    state = read_checkpoint(path, unwrap="model")  # read first: a bad file fails before the model is built
    return STMEMEncoder(config or STMEMConfig()).load_st_mem(path, state)
