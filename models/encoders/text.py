"""Lab-text encoder (MARL, paper §4.2.1: Z_t = BERT(Θ_t)): Bio-ClinicalBERT, offline.

The lab text it reads is defined in docs/CURATION.md (Dataset); its training in docs/MODEL.md.

Bio_ClinicalBERT (Alsentzer et al., 2019) as published on the Hugging Face hub is a folder with ``config.json``,
``vocab.txt`` and ``pytorch_model.bin`` (a BERT pre-training state dict: ``bert.*`` plus ``cls.*`` heads) and no
tokenizer configuration.  Loading it here needs nothing from the network: ``BertModel.from_pretrained(folder,
local_files_only=True)`` and a WordPiece tokenizer built explicitly from ``vocab.txt``.

Lower-casing.  Bio_ClinicalBERT was initialised from BioBERT, which is BERT-base **cased** (vocab 28,996, cased
entries): the clinicalBERT authors state the model is cased and the pre-training data were made with
``do_lower_case=False`` (github.com/EmilyAlsentzer/clinicalBERT issues #1 and #26; BioBERT cased: dmis-lab/biobert
issue #24 and naver/biobert-pretrained issue #6).  Because the folder has no ``tokenizer_config.json``, Hugging
Face's tokenizer falls back to ``do_lower_case=True`` and lower-cases text for a cased vocabulary (issue #26 above;
also dmis-lab/biobert-pytorch issue #24).  This module decides instead: ``lowercase=None`` takes
``do_lower_case`` from ``tokenizer_config.json`` when the folder has one, otherwise infers it from the vocabulary —
cased when ``vocab.txt`` holds upper-case entries (other than bracketed special tokens), lower-cased otherwise.
For Bio_ClinicalBERT this gives cased tokenisation, as in its pre-training.  Accents are stripped only when
lower-casing (BERT's convention).

Version note: transformers 5's ``BertTokenizer(vocab_file=...)`` ignores the file; the tokenizer is built with
``BertTokenizer(vocab={token: id})`` from the parsed ``vocab.txt`` (line number = id).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub; loaders also pass local_files_only=True

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizer

from models.encoders.freezing import PartiallyFrozen, unfrozen_count

__all__ = [
    "SPECIAL_TOKENS",
    "TextEncoder",
    "TextEncoderConfig",
    "TextEncoding",
    "build_demo_vocab",
    "infer_lowercase",
    "load_wordpiece_tokenizer",
    "read_vocab",
]

log = logging.getLogger(__name__)

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class TextEncoderConfig:
    """Where the text encoder comes from and how it is trained.

    ``folder``: a local BERT folder (Bio_ClinicalBERT layout: config.json, vocab.txt, pytorch_model.bin or
    model.safetensors); None builds a randomly initialised BERT of ``hidden`` / ``layers`` / ``heads`` /
    ``intermediate`` (default 4 x hidden) over the vocabulary in ``vocab`` (a folder with vocab.txt, or the file).
    ``unfreeze_layers``: the last N BERT layers and the projection train, the rest is frozen; 0 = projection only;
    -1 = everything.  ``max_length``: tokens per text including [CLS] and [SEP] (capped at the model's positions).
    ``lowercase``: None infers it (see the module docstring).  ``pooling``: ``cls`` (the [CLS] token) or ``mean``
    (mean over non-padding tokens) for the pooled vector.
    """

    folder: str | None = None
    vocab: str | None = None
    proj_dim: int = 768
    unfreeze_layers: int = 2
    max_length: int = 512
    lowercase: bool | None = None
    pooling: str = "cls"
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int | None = None
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.unfreeze_layers < -1:
            raise ValueError(
                f"unfreeze_layers must be -1 (all), 0 (frozen) or a positive count, got {self.unfreeze_layers}"
            )
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {self.max_length}")


class TextEncoding(NamedTuple):
    """Output of :class:`TextEncoder`: tokens (B, L, proj_dim), pooled (B, proj_dim), mask (B, L) bool."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    mask: torch.Tensor


# --------------------------------------------------------------------------- vocabulary and tokenizer


def _vocab_file(path: str | Path) -> Path:
    path = Path(path)
    file = path / "vocab.txt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no WordPiece vocabulary at {file} (expected a folder with vocab.txt, one token a line)"
        )
    return file


def read_vocab(path: str | Path) -> list[str]:
    """Tokens of a BERT ``vocab.txt`` (a folder holding it, or the file), in id order (line n -> id n)."""
    text = _vocab_file(path).read_text(encoding="utf-8")
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return [t.rstrip("\r") for t in tokens]


def infer_lowercase(vocab: Sequence[str]) -> bool:
    """True (lower-case the text) unless the vocabulary has upper-case entries besides ``[SPECIAL]`` tokens."""
    for token in vocab:
        if token.startswith("[") and token.endswith("]"):
            continue
        if token != token.lower():
            return False
    return True


def _lowercase_setting(folder: Path | None, vocab: Sequence[str], lowercase: bool | None) -> tuple[bool, str]:
    if lowercase is not None:
        return lowercase, "given"
    if folder is not None and (folder / "tokenizer_config.json").is_file():
        config = json.loads((folder / "tokenizer_config.json").read_text())
        if "do_lower_case" in config:
            return bool(config["do_lower_case"]), "tokenizer_config.json"
    return infer_lowercase(vocab), "inferred from vocab.txt"


def load_wordpiece_tokenizer(
    vocab: str | Path | Sequence[str], *, lowercase: bool | None = None, max_length: int = 512
) -> BertTokenizer:
    """A BERT WordPiece tokenizer over ``vocab`` (a folder with vocab.txt, the file, or the token list).

    ``lowercase=None`` follows the folder's ``tokenizer_config.json`` (``do_lower_case``) when present, else
    :func:`infer_lowercase`.  The five BERT special tokens must be in the vocabulary.
    """
    folder = None
    if isinstance(vocab, (str, Path)):
        folder = Path(vocab) if Path(vocab).is_dir() else None
        tokens, where = read_vocab(vocab), str(_vocab_file(vocab))
    else:
        tokens, where = list(vocab), "(token list)"
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise ValueError(f"vocabulary {where} lacks the special tokens {missing}")
    do_lower, source = _lowercase_setting(folder, tokens, lowercase)
    ids: dict[str, int] = {}
    for i, token in enumerate(tokens):
        ids.setdefault(token, i)  # a repeated line keeps its first id
    tokenizer = BertTokenizer(vocab=ids, do_lower_case=do_lower, model_max_length=max_length)
    log.info("WordPiece tokenizer: %d tokens, lowercase=%s (%s)", len(tokens), do_lower, source)
    return tokenizer


def build_demo_vocab(texts: Sequence[str], out_folder: str | Path, *, size: int = 2000, lowercase: bool = True) -> Path:
    """A small WordPiece vocabulary for ``texts`` in a BERT folder, for random-initialised text encoders.

    Writes ``out_folder/vocab.txt`` with :func:`hftri_mimic.dataset.text.build_demo_vocab` (ids 0-4: [PAD] [UNK] [CLS]
    [SEP] [MASK], then the characters, their ``##`` continuations and the most frequent words up to ``size``;
    deterministic, unlike the ``tokenizers`` trainer) and ``tokenizer_config.json`` recording ``do_lower_case``,
    so that :func:`load_wordpiece_tokenizer` reads it with the same casing. Nothing is downloaded. Returns the
    folder.
    """
    from hftri_mimic.dataset.text import build_demo_vocab as build_vocab_file

    if size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocabulary size {size} leaves no room beside the special tokens")
    out = Path(out_folder)
    build_vocab_file(texts, out, vocab_size=size, lowercase=lowercase)
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}) + "\n")
    return out


# --------------------------------------------------------------------------- the encoder


class TextEncoder(PartiallyFrozen):
    """Lab-text encoder of MARL (paper §4.2.1): Z_t = W · BERT(Θ_t) + b.

    Input:  input_ids (B, L) long, attention_mask (B, L) (1 = token, 0 = padding), from :meth:`encode_texts`.
    Output: :class:`TextEncoding`: tokens (B, L, proj_dim) = Linear(hidden -> proj_dim) of BERT's last hidden
            states; pooled (B, proj_dim) = the projected [CLS] token (``pooling="cls"``) or the masked mean of the
            projected tokens (``"mean"``); mask (B, L) bool.
    Attributes: ``bert`` (transformers ``BertModel``, no pooler), ``tokenizer`` (WordPiece), ``word_embeddings``
    (BERT's input embedding, (vocab, hidden)), ``proj``.
    Build with :meth:`from_folder` (pretrained, offline), :meth:`random` (demo) or :meth:`from_config`.
    """

    def __init__(
        self,
        bert: BertModel,
        tokenizer: BertTokenizer,
        *,
        proj_dim: int = 768,
        unfreeze_layers: int = 2,
        max_length: int = 512,
        pooling: str = "cls",
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if len(tokenizer.get_vocab()) > bert.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer.get_vocab())} tokens but the BERT embeds only {bert.config.vocab_size}"
            )
        self.bert = bert
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = min(max_length, bert.config.max_position_embeddings)
        self.proj = nn.Linear(bert.config.hidden_size, proj_dim)
        self.set_unfreeze(unfreeze_layers)

    # -- construction

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        *,
        proj_dim: int = 768,
        unfreeze_layers: int = 2,
        max_length: int = 512,
        lowercase: bool | None = None,
        pooling: str = "cls",
    ) -> TextEncoder:
        """A pretrained BERT and its WordPiece tokenizer from a local folder; never touches the network.

        The folder needs ``config.json``, ``vocab.txt`` and the weights (``pytorch_model.bin`` or
        ``model.safetensors``); a BERT pre-training checkpoint (``bert.*`` + ``cls.*``) is accepted, the heads and
        pooler are dropped.  Every ``BertModel`` weight must be in the file (ValueError naming the folder and the
        missing keys otherwise).  ``lowercase=None``: see the module docstring.
        """
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder}: no config.json (expected a BERT folder: config.json, vocab.txt, weights)"
            )
        tokenizer = load_wordpiece_tokenizer(folder, lowercase=lowercase, max_length=max_length)
        config = BertConfig.from_pretrained(folder, local_files_only=True)
        bert, info = BertModel.from_pretrained(
            folder,
            config=config,
            local_files_only=True,
            add_pooling_layer=False,
            output_loading_info=True,
            dtype=torch.float32,
        )
        problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "mismatched_keys") if info.get(k)}
        if problems:
            raise ValueError(f"{folder}: weights do not fit BertModel({config.hidden_size}): {problems}")
        log.info("loaded BERT from %s (ignored: %s)", folder, sorted(info.get("unexpected_keys") or []) or "nothing")
        return cls(
            bert,
            tokenizer,
            proj_dim=proj_dim,
            unfreeze_layers=unfreeze_layers,
            max_length=max_length,
            pooling=pooling,
        )

    @classmethod
    def random(
        cls,
        vocab: str | Path | Sequence[str],
        *,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        intermediate: int | None = None,
        proj_dim: int = 768,
        unfreeze_layers: int = 2,
        max_length: int = 512,
        lowercase: bool | None = None,
        pooling: str = "cls",
        seed: int | None = 0,
    ) -> TextEncoder:
        """A randomly initialised small BERT (demo) over ``vocab`` (folder with vocab.txt, the file, or a list).

        ``seed`` makes the initial weights reproducible without touching the global random state.
        """
        tokenizer = load_wordpiece_tokenizer(vocab, lowercase=lowercase, max_length=max_length)
        config = BertConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate or 4 * hidden,
            max_position_embeddings=max(max_length, 2),
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            bert = BertModel(config, add_pooling_layer=False)
        return cls(
            bert,
            tokenizer,
            proj_dim=proj_dim,
            unfreeze_layers=unfreeze_layers,
            max_length=max_length,
            pooling=pooling,
        )

    @classmethod
    def from_config(cls, config: TextEncoderConfig) -> TextEncoder:
        """:meth:`from_folder` when ``config.folder`` is set, :meth:`random` over ``config.vocab`` otherwise."""
        if (config.folder is None) == (config.vocab is None):
            raise ValueError("give exactly one of text encoder 'folder' (pretrained BERT) or 'vocab' (random BERT)")
        common = dict(
            proj_dim=config.proj_dim,
            unfreeze_layers=config.unfreeze_layers,
            max_length=config.max_length,
            lowercase=config.lowercase,
            pooling=config.pooling,
        )
        if config.folder is not None:
            return cls.from_folder(config.folder, **common)
        return cls.random(
            config.vocab,
            hidden=config.hidden,
            layers=config.layers,
            heads=config.heads,
            intermediate=config.intermediate,
            seed=config.seed,
            **common,
        )

    # -- freezing

    @property
    def word_embeddings(self) -> nn.Embedding:
        """BERT's input token embedding (vocab_size, hidden); e.g. to initialise learnable prompt tokens."""
        return self.bert.embeddings.word_embeddings

    @property
    def layers(self) -> list[nn.Module]:
        """BERT's transformer layers in order."""
        return list(self.bert.encoder.layer)

    def set_unfreeze(self, unfreeze_layers: int) -> None:
        """Train the last ``unfreeze_layers`` BERT layers + the projection; 0: projection only; -1: everything."""
        layers = self.layers
        n = unfrozen_count(unfreeze_layers, len(layers))
        if unfreeze_layers == -1:
            self.apply_freezing([self], [])
        else:
            self.apply_freezing(
                [self.proj, *layers[len(layers) - n :]], [self.bert.embeddings, *layers[: len(layers) - n]]
            )

    # -- tokenisation

    def encode_texts(
        self, texts: Sequence[str], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (input_ids (B, L) long, attention_mask (B, L) long), padded to the longest text.

        Every text is ``[CLS] tokens [SEP]``.  Truncation policy: a text longer than ``max_length`` tokens (512 for
        Bio-ClinicalBERT, counting [CLS] and [SEP]) keeps its first ``max_length - 2`` tokens and its closing [SEP];
        the tail is dropped and a warning names how many texts were cut.  The dataset stage checks that lab texts
        fit (docs/CURATION.md, Dataset), so truncation is a safety net, not a step of the method.
        """
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of texts, not one string")
        if not texts:
            raise ValueError("encode_texts needs at least one text")
        encoded = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        sep, pad, limit = self.tokenizer.sep_token_id, self.tokenizer.pad_token_id, self.max_length
        cut = sum(len(ids) > limit for ids in encoded)
        if cut:
            log.warning("%d of %d texts exceed %d tokens and were truncated at the end", cut, len(encoded), limit)
        encoded = [ids if len(ids) <= limit else [*ids[: limit - 1], sep] for ids in encoded]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        return input_ids.to(device), mask.to(device)

    # -- forward

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask -> (B, L, hidden) BERT last hidden states (before the projection)."""
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids))
        return out.last_hidden_state

    @staticmethod
    def mean_pool(x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) and (B, L) mask -> (B, D) mean over the unmasked tokens."""
        m = attention_mask.to(x.dtype).unsqueeze(-1)
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextEncoding:
        """(B, L) ids and mask -> :class:`TextEncoding` (tokens (B, L, proj_dim), pooled (B, proj_dim), mask)."""
        tokens = self.proj(self.hidden_states(input_ids, attention_mask))
        pooled = tokens[:, 0] if self.pooling == "cls" else self.mean_pool(tokens, attention_mask)
        return TextEncoding(tokens=tokens, pooled=pooled, mask=attention_mask.bool())

    def embed_texts(self, texts: Sequence[str]) -> TextEncoding:
        """Texts -> :class:`TextEncoding`, tokenised with :meth:`encode_texts` on the model's device."""
        ids, mask = self.encode_texts(texts, device=self.proj.weight.device)
        return self(ids, mask)
