"""The hyperparameters of a TGMM run: :class:`ModelConfig` (TGMM and its three encoders) and :class:`TrainConfig`
(optimiser, schedule, early stopping, ensemble, devices), built from config.yaml's ``model`` and ``train.optim``
blocks. Each key is defined once, here and in the component configs (``models.config.TGMMConfig``,
``models.encoders``); ``workflow/schemas/config.schema.yaml`` is kept in step by ``tests/test_train_workflow.py``.

:func:`models.training.factory.build_model` turns a :class:`ModelConfig` into a model; ``models.training.loop`` trains
it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from models.config import TASKS, TGMMConfig
from models.encoders.ecg import STMEMConfig
from models.encoders.echo import EchoEncoderConfig
from models.encoders.text import TextEncoderConfig

__all__ = ["METRIC_MODES", "ModelConfig", "TrainConfig"]

# Validation metrics and whether a larger value is better.
METRIC_MODES = {"auc": "max", "cindex": "max", "recall@1": "max", "loss": "min"}


def _from_dict(cls, values: Mapping[str, Any] | None):
    """A dataclass from a (YAML) mapping: unknown keys name themselves; lists become tuples where the field is."""
    values = dict(values or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; expected some of {sorted(names)}")
    converted = {}
    for key, value in values.items():
        if isinstance(value, list) and "tuple" in str(names[key].type):
            value = tuple(value)
        if isinstance(value, dict) and key == "candidates":
            value = {k: tuple(v) for k, v in value.items()}
        converted[key] = value
    return cls(**converted)


@dataclass
class TrainConfig:
    """Every training hyperparameter (the model's are in :class:`ModelConfig`). The paper names the optimiser,
    scheduler and mixed precision (§5.1) but no values: these defaults are this project's."""

    epochs: int = 30  # upper bound; early stopping usually ends sooner
    batch_size: int = 16
    eval_batch_size: int = 256  # validation / prediction batches (the validation loss is a mean over them)
    lr: float = 1e-3  # explicit Adafactor step size (relative_step=False)
    weight_decay: float = 0.0
    adafactor_eps: tuple[float, float] = (1e-30, 1e-3)
    adafactor_clip_threshold: float = 1.0  # Adafactor's own update clipping (RMS)
    adafactor_decay_rate: float = -0.8
    adafactor_beta1: float | None = None  # None: no first moment (Adafactor's default, least memory)
    grad_clip: float = 1.0  # max global gradient L2 norm; 0 disables
    patience: int = 5  # early stopping: epochs without an improvement > min_delta
    min_delta: float = 1e-4  # absolute improvement of the validation metric that counts
    scheduler_factor: float = 0.5  # ReduceLROnPlateau: lr *= factor ...
    scheduler_patience: int = 2  # ... after this many epochs without improvement (threshold = min_delta, abs)
    scheduler_min_lr: float = 1e-6
    amp: Literal["auto", "off", "bf16"] = "auto"  # bf16 autocast, CUDA only ('auto' = when the GPU supports it)
    seed: int = 0
    # Models per diagnosis / prognosis run, trained with seeds seed, seed+1, ...; their predictions are averaged
    # (a deep ensemble: on a small cohort one seed's early-stopped model varies a lot). Retrieval trains one.
    ensemble: dict[str, int] = field(default_factory=lambda: {"diagnosis": 1, "prognosis": 1})
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = 0  # DataLoader workers for raw data (spawn context); cached features use none
    threads: int | None = None  # torch.set_num_threads when set (e.g. Snakemake's threads)
    drop_last: bool = False
    deterministic: bool = True  # torch.use_deterministic_algorithms(True, warn_only=True)
    progress: bool = True  # tqdm bar over epochs (stderr)
    save_frozen: bool = False  # checkpoints also hold the frozen encoder weights
    metrics: dict[str, str] = field(
        default_factory=lambda: {"diagnosis": "auc", "prognosis": "cindex", "retrieval": "loss"}
    )

    def __post_init__(self) -> None:
        if self.amp not in ("auto", "off", "bf16"):
            raise ValueError(f"amp must be 'auto', 'off' or 'bf16', got {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for task, metric in self.metrics.items():
            if task not in TASKS or metric not in METRIC_MODES:
                raise ValueError(f"metrics: {task!r} -> {metric!r}; tasks {TASKS}, metrics {tuple(METRIC_MODES)}")
        for task, members in self.ensemble.items():
            if task not in ("diagnosis", "prognosis") or not isinstance(members, int) or members < 1:
                raise ValueError(f"ensemble: {task!r} -> {members!r}; diagnosis / prognosis -> models per run (>= 1)")
        if min(self.epochs, self.batch_size, self.eval_batch_size, self.patience) < 1:
            raise ValueError("epochs, batch_size, eval_batch_size and patience must be >= 1")
        self.adafactor_eps = tuple(self.adafactor_eps)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TrainConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ModelConfig:
    """The model's hyperparameters: TGMM (λ weights, margin, temperature, prompt texts, insertion position,
    candidate answers, ...) and the three encoders (sizes, checkpoints, ``unfreeze_layers``).

    ``encoder_seed`` initialises randomly built encoders (the demo) independently of the training seed, so every
    run of a configuration shares the same frozen encoder weights (and feature cache); the trainable projections
    are re-initialised from the training seed.
    """

    tgmm: TGMMConfig = field(default_factory=TGMMConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    ecg: STMEMConfig = field(default_factory=STMEMConfig)
    echo: EchoEncoderConfig = field(default_factory=EchoEncoderConfig)
    encoder_seed: int = 0

    def __post_init__(self) -> None:
        dims = {"tgmm.dim": self.tgmm.dim, "text.proj_dim": self.text.proj_dim}
        dims |= {"ecg.proj_dim": self.ecg.proj_dim, "echo.proj_dim": self.echo.proj_dim}
        if len(set(dims.values())) != 1:
            raise ValueError(f"the encoders must project to TGMM's dim: {dims}")

    @property
    def frozen(self) -> bool:
        """All three encoders frozen up to their projections: feature caching applies."""
        return self.text.unfreeze_layers == self.ecg.unfreeze_layers == self.echo.unfreeze_layers == 0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ModelConfig:
        values = dict(values or {})
        parts = {
            "tgmm": TGMMConfig,
            "text": TextEncoderConfig,
            "ecg": STMEMConfig,
            "echo": EchoEncoderConfig,
        }
        unknown = sorted(set(values) - set(parts) - {"encoder_seed"})
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown}")
        built = {k: _from_dict(c, values.get(k)) for k, c in parts.items()}
        return cls(**built, encoder_seed=int(values.get("encoder_seed", 0)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
