"""Typed configuration for the recursive-reasoning model and its training.

Every ablation axis of the TRM paper is one field of `ModelConfig`; HRM and the TRM variants
are presets (named bundles of field values), never copies of the model.

    from trm_core.config import ModelConfig
    cfg = ModelConfig.from_preset("trm_mlp", vocab_size=11, seq_len=81)

Section numbers (§N) refer to shared/docs/TRM_SPEC.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

NET_CHOICES = ("single", "dual")
MIXER_CHOICES = ("attention", "mlp")
GRAD_CHOICES = ("full", "one_step")
POS_ENCODING_CHOICES = ("rope", "learned", "none")
LATENT_CHOICES = ("y_z", "single_z", "multiscale")
LOSS_CHOICES = ("stablemax", "softmax")
DTYPE_CHOICES = ("auto", "float32", "bfloat16")
COMPILE_CHOICES = ("auto", "on", "off")


def _check_choice(owner: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{name}={value!r} is not allowed; choose one of {list(allowed)}")


def _check_min(owner: str, name: str, value: Any, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(
            f"{owner}.{name}={value!r} is not allowed; it must be a number >= {minimum}"
        )


def _check_range(owner: str, name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{owner}.{name}={value!r} is not allowed; it must lie in [{low}, {high}]")


def _from_dict(cls, values: dict[str, Any], owner: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {owner} field(s) {unknown}; known fields are {sorted(known)}")
    return cls(**values)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and recursion. Task shape (vocab, seq_len, puzzle ids) is part of it
    because the MLP mixer and the puzzle-embedding table are sized by it."""

    # task shape
    vocab_size: int = 11
    seq_len: int = 81
    num_puzzle_ids: int = 1
    # ablation axes (ARCHITECTURE.md "Model axes")
    net: str = "single"  # single: one net for z and y (TRM); dual: f_L for z, f_H for y (HRM)
    layers: int = 2  # blocks per network
    mixer: str = "mlp"  # attention | mlp (sequence-axis SwiGLU, §1.3)
    grad: str = "full"  # full: backprop the last recursion (§1.4); one_step: HRM (§1.5)
    T: int = 3  # recursions per supervision step (H_cycles)
    n: int = 6  # latent updates per recursion (L_cycles)
    halt_max_steps: int = 16  # N_sup
    act_continue: bool = False  # HRM's Q-learning continue loss + halt rule q_halt > q_continue
    halt_exploration_prob: float = 0.1
    pos_encoding: str = "none"  # rope | learned | none
    puzzle_emb_len: int = 16  # sequence slots reserved for the puzzle embedding (§1.2)
    puzzle_emb_ndim: int | None = None  # None: the hidden size; 0 disables the embedding
    latents: str = "y_z"  # y_z | single_z | multiscale (Table 2)
    hidden: int = 512
    heads: int = 8
    expansion: float = 4.0
    swiglu_multiple: int = 256  # SwiGLU widths round up to this (upstream 256; tiny models: less)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        owner = "model"
        _check_choice(owner, "net", self.net, NET_CHOICES)
        _check_choice(owner, "mixer", self.mixer, MIXER_CHOICES)
        _check_choice(owner, "grad", self.grad, GRAD_CHOICES)
        _check_choice(owner, "pos_encoding", self.pos_encoding, POS_ENCODING_CHOICES)
        _check_choice(owner, "latents", self.latents, LATENT_CHOICES)
        for name in ("vocab_size", "seq_len", "num_puzzle_ids", "layers", "T", "n"):
            _check_min(owner, name, getattr(self, name), 1)
        _check_min(owner, "halt_max_steps", self.halt_max_steps, 1)
        _check_min(owner, "hidden", self.hidden, 1)
        _check_min(owner, "heads", self.heads, 1)
        _check_min(owner, "puzzle_emb_len", self.puzzle_emb_len, 0)
        _check_min(owner, "swiglu_multiple", self.swiglu_multiple, 1)
        _check_range(owner, "halt_exploration_prob", self.halt_exploration_prob, 0.0, 1.0)
        if self.expansion <= 0:
            raise ValueError(f"model.expansion={self.expansion!r} is not allowed; it must be > 0")
        if self.hidden % self.heads:
            raise ValueError(
                f"model.hidden={self.hidden} must be divisible by model.heads={self.heads}"
            )
        if self.pos_encoding == "rope" and (self.hidden // self.heads) % 2:
            raise ValueError(
                f"model.pos_encoding='rope' needs an even head size, got "
                f"hidden/heads = {self.hidden}/{self.heads}"
            )
        ndim = self.puzzle_emb_dim
        if ndim < 0:
            raise ValueError(f"model.puzzle_emb_ndim={ndim} is not allowed; it must be >= 0")
        if ndim > 0 and self.puzzle_emb_len * self.hidden < ndim:
            raise ValueError(
                f"model.puzzle_emb_len={self.puzzle_emb_len} slots of hidden={self.hidden} cannot "
                f"hold a puzzle embedding of {ndim} values; use puzzle_emb_len >= "
                f"{math.ceil(ndim / self.hidden)}"
            )
        if self.latents == "multiscale" and self.n < 2:
            raise ValueError(
                "model.latents='multiscale' keeps n separate z's; it needs model.n >= 2"
            )

    # ---- derived facts, each defined once -------------------------------------------
    @property
    def puzzle_emb_dim(self) -> int:
        """Width of the learned puzzle vector; by default one hidden vector, none without slots."""
        if self.puzzle_emb_ndim is not None:
            return self.puzzle_emb_ndim
        return self.hidden if self.puzzle_emb_len > 0 else 0

    @property
    def total_seq_len(self) -> int:
        """Tokens plus puzzle-embedding slots: the length every block sees."""
        return self.seq_len + self.puzzle_emb_len

    @property
    def calls_per_step(self) -> int:
        """Network calls per supervision step: T recursions of n latent + 1 answer update."""
        return self.T * (self.n + 1)

    @property
    def grad_calls_per_step(self) -> int:
        return self.n + 1 if self.grad == "full" else 2

    @property
    def depth(self) -> int:
        """Effective depth per supervision step, T(n+1)·layers (TRM Table 1)."""
        return self.calls_per_step * self.layers

    @property
    def forward_passes_per_step(self) -> int:
        """NFP of TRM Table 1: the continue loss needs a second (no-grad) forward."""
        return 2 if self.act_continue else 1

    def replace(self, **changes: Any) -> ModelConfig:
        return _from_dict(ModelConfig, {**dataclasses.asdict(self), **changes}, "model")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, values, "model")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        if name not in MODEL_PRESETS:
            raise ValueError(
                f"unknown model preset {name!r}; choose one of {sorted(MODEL_PRESETS)}"
            )
        return _from_dict(cls, {**MODEL_PRESETS[name], **overrides}, "model")


# Presets are deltas from the ModelConfig defaults (TRM-MLP on Sudoku, TRM Table 1 top row).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # TRM (T=3, n=6), MLP mixer without position encoding (README recipe, §6).
    "trm_mlp": {},
    # TRM with self-attention and RoPE (the "w/ self-attention" row, TRM-Att of Table 4).
    "trm_att": {"mixer": "attention", "pos_encoding": "rope"},
    # Table 1 rows expressed as field changes.
    "trm_mlp_4layers": {"layers": 4, "n": 3},
    "trm_dual": {"net": "dual"},
    "trm_one_step": {"grad": "one_step"},
    "trm_act_continue": {"act_continue": True},
    "trm_t2_n2": {"T": 2, "n": 2},
    "trm_single_z": {"latents": "single_z"},
    "trm_multiscale": {"latents": "multiscale"},
    # HRM (§1.5): two 4-block attention nets, T=n=2, 1-step gradient, Q-learning continue
    # loss, one puzzle-embedding slot. Train it with a `hrm_*` TrainConfig preset (no EMA).
    "hrm": {
        "net": "dual",
        "layers": 4,
        "mixer": "attention",
        "grad": "one_step",
        "T": 2,
        "n": 2,
        "act_continue": True,
        "pos_encoding": "rope",
        "puzzle_emb_len": 1,
    },
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe (§2.1, §2.2). Defaults are TRM's Sudoku recipe."""

    global_batch_size: int = 768
    lr: float = 1e-4
    lr_warmup_steps: int = 2000
    lr_min_ratio: float = 1.0  # 1.0 = constant after warmup (TRM, HRM)
    total_steps: int | None = None  # only needed for a decaying schedule
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 1.0
    puzzle_emb_lr: float = 1e-4
    puzzle_emb_weight_decay: float = 1.0
    ema: bool = True
    ema_rate: float = 0.999
    loss: str = "stablemax"
    q_loss_weight: float = 0.5
    # auto: bfloat16 on CUDA; on CPU bfloat16 where it is native and hidden >= 128, else
    # float32 (trm_core.cpu says why; the Trainer keeps the reason in `dtype_reason`)
    dtype: str = "auto"
    compile: str = "auto"  # auto: on for CUDA, off on CPU (slower there, STACK.md)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, logged with the run

    def __post_init__(self) -> None:
        owner = "train"
        _check_min(owner, "global_batch_size", self.global_batch_size, 1)
        _check_min(owner, "lr", self.lr, 0.0)
        _check_min(owner, "lr_warmup_steps", self.lr_warmup_steps, 0)
        _check_range(owner, "lr_min_ratio", self.lr_min_ratio, 0.0, 1.0)
        _check_range(owner, "beta1", self.beta1, 0.0, 1.0)
        _check_range(owner, "beta2", self.beta2, 0.0, 1.0)
        _check_min(owner, "weight_decay", self.weight_decay, 0.0)
        _check_min(owner, "puzzle_emb_lr", self.puzzle_emb_lr, 0.0)
        _check_min(owner, "puzzle_emb_weight_decay", self.puzzle_emb_weight_decay, 0.0)
        _check_range(owner, "ema_rate", self.ema_rate, 0.0, 1.0)
        _check_min(owner, "q_loss_weight", self.q_loss_weight, 0.0)
        _check_choice(owner, "loss", self.loss, LOSS_CHOICES)
        _check_choice(owner, "dtype", self.dtype, DTYPE_CHOICES)
        _check_choice(owner, "compile", self.compile, COMPILE_CHOICES)
        if self.lr_min_ratio < 1.0 and not self.total_steps:
            raise ValueError(
                "train.lr_min_ratio < 1 decays the learning rate; set train.total_steps"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        return _from_dict(TrainConfig, {**dataclasses.asdict(self), **changes}, "train")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, values, "train")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainConfig:
        if name not in TRAIN_PRESETS:
            raise ValueError(
                f"unknown train preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}"
            )
        return _from_dict(cls, {**TRAIN_PRESETS[name], **overrides}, "train")


# Recipes of §2.1 as deltas from the TrainConfig defaults (TRM Sudoku). Budgets (epochs, eval
# interval) belong to the suite's scale, not here.
_ARC_WEIGHTS = {"weight_decay": 0.1, "puzzle_emb_lr": 1e-2, "puzzle_emb_weight_decay": 0.1}
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "trm_sudoku": {},
    "trm_maze": {},
    "trm_arc": dict(_ARC_WEIGHTS),
    # HRM trains without EMA (§2.1 "HRM recipe").
    "hrm_sudoku": {"ema": False},
    "hrm_maze": {"ema": False},
    "hrm_arc": {**_ARC_WEIGHTS, "ema": False},
}
