"""MARL encoders (paper §4.2.1): Bio-ClinicalBERT for the lab text, ST-MEM for the ECG, EchoPrime for the echo.

Each encoder loads its public checkpoint from a local path (never downloaded) or is built randomly initialised at a
configurable size for the demo, and projects its modality to ``proj_dim`` (768).  See ``models/README.md``.
"""

from models.encoders.ecg import (
    ST_MEM_LEADS,
    STMEMConfig,
    STMEMEncoder,
    STMEMInputTransform,
    STMEMViT,
    check_state_dict,
    load_st_mem,
    read_checkpoint,
)
from models.encoders.echo import (
    ECHOPRIME_MEAN_BGR,
    ECHOPRIME_STD_BGR,
    N_VIEWS,
    EchoEncoderConfig,
    EchoEncoding,
    EchoPrimeEncoder,
    build_video_encoder,
    load_echoprime,
)
from models.encoders.text import (
    SPECIAL_TOKENS,
    TextEncoder,
    TextEncoderConfig,
    TextEncoding,
    build_demo_vocab,
    infer_lowercase,
    load_wordpiece_tokenizer,
    read_vocab,
)

__all__ = [
    "ECHOPRIME_MEAN_BGR",
    "ECHOPRIME_STD_BGR",
    "N_VIEWS",
    "SPECIAL_TOKENS",
    "ST_MEM_LEADS",
    "EchoEncoderConfig",
    "EchoEncoding",
    "EchoPrimeEncoder",
    "STMEMConfig",
    "STMEMEncoder",
    "STMEMInputTransform",
    "STMEMViT",
    "TextEncoder",
    "TextEncoderConfig",
    "TextEncoding",
    "build_demo_vocab",
    "build_video_encoder",
    "check_state_dict",
    "infer_lowercase",
    "load_echoprime",
    "load_st_mem",
    "load_wordpiece_tokenizer",
    "read_checkpoint",
    "read_vocab",
]
