"""Shared fixtures: tiny configurations that keep unit tests fast on 2 CPU cores."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.arrays import PuzzleArrays
from trm_core import ModelConfig, TrainConfig

torch.set_num_threads(2)


def pytest_configure(config):
    """Once, before any test process starts a Ray: the user's Ray auth token. Every embedded
    Ray reads ~/.ray/auth_token and the first one writes it when it is missing; two started at
    once on a fresh machine (`make test` runs two test processes) could each write their own."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it
        return
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        return
    try:
        from ray._private.authentication.authentication_token_generator import (
            generate_new_authentication_token,
        )
    except ImportError:  # no Ray here (the GPU machine runs trm_core's tests with torch only)
        return

    token.parent.mkdir(parents=True, exist_ok=True)
    partial = token.with_name(f".auth_token.{os.getpid()}")
    partial.write_text(generate_new_authentication_token())
    partial.chmod(0o600)
    partial.replace(token)  # whole or not at all


def tiny_model_config(**overrides) -> ModelConfig:
    base = dict(
        vocab_size=6,
        seq_len=8,
        hidden=16,
        heads=2,
        expansion=2,
        swiglu_multiple=8,
        T=3,
        n=2,
        halt_max_steps=4,
        puzzle_emb_len=2,
        num_puzzle_ids=3,
    )
    base.update(overrides)
    preset = base.pop("preset", "trm_mlp")
    return ModelConfig.from_preset(preset, **base)


def tiny_train_config(**overrides) -> TrainConfig:
    base = dict(
        global_batch_size=8,
        lr=1e-3,
        lr_warmup_steps=2,
        weight_decay=0.1,
        puzzle_emb_lr=1e-2,
        puzzle_emb_weight_decay=0.1,
        ema=True,
        ema_rate=0.9,
    )
    base.update(overrides)
    return TrainConfig(**base)


def random_arrays(cfg: ModelConfig, examples: int = 40, seed: int = 0) -> PuzzleArrays:
    """Random puzzles of `cfg`'s shape, one example each, with random puzzle ids."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(1, cfg.vocab_size, (examples, cfg.seq_len)).astype(np.uint8)
    labels = rng.integers(1, cfg.vocab_size, (examples, cfg.seq_len)).astype(np.uint8)
    return PuzzleArrays.one_example_per_puzzle(
        inputs,
        labels,
        np.ones(examples, dtype=np.int64),
        cfg.vocab_size,
        puzzle_ids=rng.integers(0, cfg.num_puzzle_ids, examples).astype(np.int32),
    )


def random_batch(cfg: ModelConfig, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(0, cfg.vocab_size, (batch_size, cfg.seq_len), generator=g),
        "labels": torch.randint(1, cfg.vocab_size, (batch_size, cfg.seq_len), generator=g),
        "puzzle_ids": torch.randint(0, cfg.num_puzzle_ids, (batch_size,), generator=g),
    }


@pytest.fixture
def tiny_config() -> ModelConfig:
    return tiny_model_config()
