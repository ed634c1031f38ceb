"""Model FLOPs per example (matmul FLOPs = 2 × MACs; embeddings, norms and softmax ignored),
the convention of TRM_SPEC §7. Training counts forward calls once and backward as 2× forward
for the differentiated calls only; HRM's continue loss adds a no-grad forward."""

from __future__ import annotations

from trm_core.config import ModelConfig
from trm_core.layers import swiglu_width


def net_call_flops(cfg: ModelConfig) -> float:
    """Forward FLOPs of one network call (all its blocks) for one example."""
    length, hidden = cfg.total_seq_len, cfg.hidden
    channel_mlp = 2 * 3 * hidden * swiglu_width(hidden, cfg.expansion, cfg.swiglu_multiple) * length
    if cfg.mixer == "attention":
        projections = 2 * (3 * hidden * hidden + hidden * hidden) * length
        scores_and_values = 2 * 2 * length * length * hidden
        mixer = projections + scores_and_values
    else:
        mixer = 2 * 3 * length * swiglu_width(length, cfg.expansion, cfg.swiglu_multiple) * hidden
    return cfg.layers * float(channel_mlp + mixer)


def head_flops(cfg: ModelConfig) -> float:
    return 2.0 * cfg.hidden * (cfg.vocab_size * cfg.seq_len + 2)


def supervision_step_flops(cfg: ModelConfig, training: bool) -> float:
    """FLOPs of one supervision step for one example."""
    call = net_call_flops(cfg)
    forward = cfg.calls_per_step * call + head_flops(cfg)
    if not training:
        return forward
    backward = 2 * (cfg.grad_calls_per_step * call + head_flops(cfg))
    extra_forward = forward if cfg.act_continue else 0.0
    return forward + backward + extra_forward


def training_flops(cfg: ModelConfig, steps: int, global_batch_size: int) -> float:
    """FLOPs of a whole training run: every optimizer step is one supervision step of every
    carried slot (§1.6), so steps × batch × one training supervision step."""
    return float(steps) * global_batch_size * supervision_step_flops(cfg, training=True)


def test_flops_per_puzzle(cfg: ModelConfig, supervision_steps: int, samples: int = 1) -> float:
    """FLOPs to answer one test puzzle: `supervision_steps` forward supervision steps (no
    early halting, §4) for each of `samples` test-time augmentations."""
    return float(supervision_steps) * samples * supervision_step_flops(cfg, training=False)
