"""TGMM hyperparameters (paper §4-§5.1) and the modality / subset vocabulary (docs/MODEL.md).

Where the paper gives a value it is cited (§ / Eq.); every other default is this project's choice and
is listed in ``models/README.md`` ("Choices where the paper is not explicit").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

# Order t, s, m of the paper (§4.1): text (Labs as text), signal (ECG), image/video (ECHO).
MODALITIES: tuple[str, ...] = ("lab", "ecg", "echo")
# The 7 modality subsets of Tables 2-3, written with "+" in modality order.
SUBSETS: tuple[str, ...] = ("lab", "ecg", "echo", "lab+ecg", "lab+echo", "ecg+echo", "lab+ecg+echo")
# The 7 slots of Z_all in Eq. 8's order t, ts, s, sm, m, tm, tsm (specific and shared features).
SLOTS: tuple[str, ...] = ("lab", "lab+ecg", "ecg", "ecg+echo", "echo", "lab+echo", "lab+ecg+echo")
TASKS: tuple[str, ...] = ("diagnosis", "prognosis", "retrieval")
# The six retrieval directions in Table 3's column order: (query modality, candidate modality).
DIRECTIONS: tuple[tuple[str, str], ...] = (
    ("lab", "ecg"),
    ("ecg", "lab"),
    ("lab", "echo"),
    ("echo", "lab"),
    ("ecg", "echo"),
    ("echo", "ecg"),
)


def direction_name(query: str, candidate: str) -> str:
    """Name of a retrieval direction as used in results and file names, e.g. ``lab_to_ecg``."""
    for modality in (query, candidate):
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    if query == candidate:
        raise ValueError(f"a retrieval direction needs two different modalities, got {query!r} twice")
    return f"{query}_to_{candidate}"


def subset_mask(subset: str) -> tuple[bool, bool, bool]:
    """Which of (lab, ecg, echo) a subset string uses, e.g. ``"lab+echo"`` -> (True, False, True)."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown modality subset {subset!r}; expected one of {SUBSETS}")
    parts = subset.split("+")
    return tuple(name in parts for name in MODALITIES)  # type: ignore[return-value]


def slot_members(slot: str) -> tuple[bool, bool, bool]:
    """Which modalities a slot of Z_all is built from (a slot is itself a subset string)."""
    return subset_mask(slot)


@dataclass
class TGMMConfig:
    """Every TGMM hyperparameter. Defaults: the paper where it gives one, otherwise documented choices."""

    # --- sizes -----------------------------------------------------------------------------------
    dim: int = 768  # §5.1: "All modalities were represented as 768-dimensional vectors"
    heads: int = 8  # not given; 768 / 8 = 96 per head
    ffn_mult: int = 4  # feed-forward width of the one-layer encoder (TGM) and decoder (response)
    dropout: float = 0.1  # attention / feed-forward dropout; not given

    # --- fusion (§4.2.2) and its baselines (§5.3, Table 5) ----------------------------------------
    # "mffm": MedFlexFusion. Baselines with the same encoders and training loop: "mean_cat" (an absent
    # modality's embedding is replaced by the mean of the present ones, then the three are concatenated
    # and projected) and "multisurv" (MultiSurv-style element-wise max over the present embeddings, then
    # an MLP); see models/baselines.py. A baseline fusion gives one fused feature instead of Z_all's 7 slots.
    fusion: Literal["mffm", "mean_cat", "multisurv"] = "mffm"
    # Textual guidance (§4.2.3, Table 6): "human+learned" = SSTC (C_h among K learnable tokens, the
    # proposed model); "human" = C_h only; "none" = no TGM (the response reads the fused features).
    guidance: Literal["human+learned", "human", "none"] = "human+learned"

    # --- MFFM (§4.2.2, Eq. 1-8) ------------------------------------------------------------------
    mffm_proj_dim: int | None = None  # width of P(·) in Eq. 3 ("high-dimensional space"); None = dim
    # Initial λ of Eq. 3 for (t, s, m): (λ1, λ2, 1-λ1-λ2). Renormalised over the present modalities.
    mffm_lambda_init: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)

    # --- TGM (§4.2.3, Eq. 9) ---------------------------------------------------------------------
    num_learnable_tokens: int = 8  # K, the size of C_l; not given
    # Where C_h is inserted within C_l: 0 = before all K learnable tokens, K = after them. §5.4 / Fig. 7
    # found the result stable over early / middle / late; the middle is the default.
    human_text_position: int = 4
    # C_l initialisation: embedding rows of these words (tokenised, cycled to K ids) or, when None, of
    # K ordinary vocabulary tokens drawn with ``learnable_init_seed``.
    learnable_init_words: tuple[str, ...] | None = None
    learnable_init_seed: int = 0
    max_prompt_len: int = 64  # positional table of the prompt encoder (K + len(C_h) must fit)
    stochastic_depth: float = 0.1  # p_drop of Eq. 9; not given
    # Initial (λ, 1-λ) mixing the keys/values of Z_all and Z_C in Eq. 9 (Eq. 3 with two groups).
    tgm_lambda_init: tuple[float, float] = (0.5, 0.5)
    # C_h: the human-defined task texts (§4.2.3). Written for a cased or uncased clinical BERT vocab.
    prompts: dict[str, str] = field(
        default_factory=lambda: {
            "diagnosis": "does the patient have heart failure at this admission?",
            "prognosis": "what is the risk that the patient develops heart failure in the future?",
            "retrieval": "describe the cardiac condition of the patient.",
        }
    )

    # --- response module (§4.2.4) ----------------------------------------------------------------
    response_head: Literal["decoder", "linear"] = "decoder"  # "linear": Table 6's linear prober
    # Candidate answers; index = class label (diagnosis: prevalent_hf 0/1; prognosis: incident_hf 0/1).
    candidates: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "diagnosis": ("no heart failure", "heart failure"),
            "prognosis": ("low risk", "high risk"),  # Fig. 8(b): low risk (0) vs high risk (1)
        }
    )
    answer_eos: bool = True  # score the end token after each answer, so candidates are complete texts
    max_answer_len: int = 16  # positional table of the decoder (answer tokens + end token)
    loglik_reduction: Literal["sum", "mean"] = "sum"  # Eq. 12: "total log-likelihood" of a candidate
    # Prognosis risk score ŷ of Eq. 14-15: "response" = log-odds of the high-risk answer from the
    # response module (or linear prober); "head" = a linear head on the pooled TGM output.
    risk_score: Literal["response", "head"] = "response"
    high_risk_index: int = 1  # which prognosis candidate is "high risk"

    # --- retrieval (§4.3.3) ----------------------------------------------------------------------
    retrieval_dim: int = 256  # D′ of the per-modality retrieval embeddings

    # --- losses (§4.3, Eq. 10-16); the paper reports no values ------------------------------------
    lambda_lm: float = 1.0  # Eq. 10
    lambda_mc: float = 1.0  # Eq. 10
    lambda_unlikely: float = 1.0  # Eq. 10
    unlikelihood_eps: float = 1e-6  # ε of Eq. 12
    lambda_dig: float = 1.0  # Eq. 13
    lambda_r: float = 1.0  # Eq. 13, Cox partial likelihood (Eq. 14)
    lambda_m: float = 1.0  # Eq. 13, margin ranking (Eq. 15)
    margin: float = 0.1  # Eq. 15
    temperature: float = 0.07  # τ of Eq. 16

    def __post_init__(self) -> None:
        proj = self.proj_dim
        if self.dim % self.heads or proj % self.heads:
            raise ValueError(f"dim {self.dim} and mffm_proj_dim {proj} must be divisible by heads {self.heads}")
        if not 0 <= self.human_text_position <= self.num_learnable_tokens:
            raise ValueError(f"human_text_position {self.human_text_position} outside 0..{self.num_learnable_tokens}")
        for name, init in (("mffm_lambda_init", self.mffm_lambda_init), ("tgm_lambda_init", self.tgm_lambda_init)):
            if min(init) <= 0 or not math.isclose(sum(init), 1.0, abs_tol=1e-6):
                raise ValueError(f"{name} must be positive weights summing to 1, got {init}")
        for task in TASKS:
            if task not in self.prompts:
                raise ValueError(f"no human-defined prompt text for task {task!r}")
        for task in ("diagnosis", "prognosis"):
            if len(self.candidates.get(task, ())) < 2:
                raise ValueError(f"task {task!r} needs at least two candidate answers")
        if not 0 <= self.high_risk_index < len(self.candidates["prognosis"]):
            raise ValueError("high_risk_index is not a prognosis candidate")
        if self.fusion not in ("mffm", "mean_cat", "multisurv"):
            raise ValueError(f"fusion must be mffm, mean_cat or multisurv, got {self.fusion!r}")
        if self.guidance not in ("human+learned", "human", "none"):
            raise ValueError(f"guidance must be human+learned, human or none, got {self.guidance!r}")
        if not 0.0 <= self.stochastic_depth <= 1.0:
            raise ValueError("stochastic_depth must lie in [0, 1]")

    @property
    def proj_dim(self) -> int:
        return self.mffm_proj_dim or self.dim
