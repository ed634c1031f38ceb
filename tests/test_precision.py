"""Precision on CPU (issue 14): a bf16 forward tracks fp32 within bf16 noise, and
`dtype=auto` picks bf16 only where the CPU multiplies bf16 natively (flags and a cached probe)
and the model is wide enough, fp32 otherwise, with its reason; CUDA keeps bf16."""

import json

import pytest
import torch

from tests.conftest import random_batch, tiny_model_config, tiny_train_config
from trm_core import RecursiveReasoningModel, Trainer, cpu
from trm_core.losses import token_cross_entropy
from trm_core.trainer import resolve_dtype

# bf16 keeps 8 significant bits (relative step 2^-8 ≈ 0.4 %) at every op of 21 recursive calls.
# Measured at these sizes: loss within 0.02–0.4 % of fp32, gradient cosine 0.979–0.9999.
LOSS_RTOL = 0.02
GRAD_MIN_COSINE = 0.95


def _loss_and_grad(model, batch, dtype):
    model.zero_grad(set_to_none=True)
    states = model.initial_states(batch["inputs"].shape[0], dtype)
    out = model(states, batch["inputs"], batch["puzzle_ids"], track_grad=True)
    loss = token_cross_entropy(out.logits, batch["labels"], "stablemax").mean()
    loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return loss.item(), torch.cat(grads)


@pytest.mark.parametrize("preset", ["trm_mlp", "trm_att", "hrm"])
def test_bf16_loss_and_gradient_track_fp32_within_bf16_noise(preset):
    cfg = tiny_model_config(preset=preset, hidden=64, heads=4)
    torch.manual_seed(0)
    model = RecursiveReasoningModel(cfg)
    batch = random_batch(cfg, 8, seed=0)
    loss32, grad32 = _loss_and_grad(model, batch, torch.float32)
    loss16, grad16 = _loss_and_grad(model, batch, torch.bfloat16)
    assert loss16 == pytest.approx(loss32, rel=LOSS_RTOL)
    assert torch.nn.functional.cosine_similarity(grad32, grad16, dim=0) >= GRAD_MIN_COSINE


def test_a_bf16_trainer_step_on_cpu_is_finite_and_keeps_bf16_states():
    cfg = tiny_model_config(hidden=64, heads=4)
    trainer = Trainer(cfg, tiny_train_config(dtype="bfloat16"), "cpu")
    metrics = trainer.train_step(random_batch(cfg, 8, seed=0))
    assert metrics["loss"] == pytest.approx(metrics["loss"])  # not NaN
    assert trainer.carry.states[0].dtype == torch.bfloat16
    assert trainer.dtype_reason == "set by train.dtype"


CPUINFO = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse avx2 {extra}\n"


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    """A CPU with chosen flags and probe timings; the probe cache goes to tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    probes = []

    def install(flags: str, fp32_ms: float = 10.0, bf16_ms: float = 2.0):
        def probe():
            probes.append((fp32_ms, bf16_ms))
            return fp32_ms, bf16_ms

        monkeypatch.setattr(cpu, "read_cpuinfo", lambda: CPUINFO.format(extra=flags))
        monkeypatch.setattr(cpu, "probe_bf16_matmul", probe)
        cpu._probed_choice.cache_clear()
        return probes

    yield install
    cpu._probed_choice.cache_clear()


def test_without_bf16_flags_auto_is_fp32_and_nothing_is_probed(fake_cpu):
    probes = fake_cpu("avx512f")
    choice = cpu.auto_cpu_dtype(512)
    assert choice.dtype == torch.float32 and "no avx512_bf16/amx_bf16 flag" in choice.reason
    assert probes == []


def test_native_bf16_is_picked_for_wide_models_only(fake_cpu):
    probes = fake_cpu("avx512f avx512_bf16")
    wide = cpu.auto_cpu_dtype(512)
    assert wide.dtype == torch.bfloat16 and "avx512_bf16" in wide.reason
    narrow = cpu.auto_cpu_dtype(cpu.BF16_MIN_HIDDEN - 1)
    assert narrow.dtype == torch.float32 and "too small" in narrow.reason
    assert len(probes) == 1


def test_flags_with_an_emulated_probe_give_fp32(fake_cpu):
    fake_cpu("amx_bf16 avx512_bf16", fp32_ms=6.0, bf16_ms=900.0)
    choice = cpu.auto_cpu_dtype(512)
    assert choice.dtype == torch.float32 and "not native" in choice.reason


def test_the_probe_runs_once_per_machine_and_is_cached_on_disk(fake_cpu, tmp_path):
    probes = fake_cpu("avx512_bf16")
    assert cpu.auto_cpu_dtype(512).dtype == torch.bfloat16
    cpu._probed_choice.cache_clear()  # a new process
    assert cpu.auto_cpu_dtype(512).dtype == torch.bfloat16
    assert len(probes) == 1
    cache = json.loads((tmp_path / "trm-lab" / "cpu_dtype.json").read_text())
    (key,) = cache
    assert key.startswith("Test CPU|avx512_bf16|") and cache[key]["bf16_ms"] == 2.0


def test_cuda_auto_stays_bf16_and_an_explicit_dtype_wins(fake_cpu):
    fake_cpu("avx2")
    assert resolve_dtype("auto", torch.device("cuda"), 512)[0] == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu"), 512)[0] == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu"), 16)[0] == torch.bfloat16
    assert resolve_dtype("float32", torch.device("cuda"), 512)[0] == torch.float32


def test_cpu_flags_are_read_from_the_flags_line():
    assert {"avx2", "avx512_bf16"} <= cpu.cpu_flags(CPUINFO.format(extra="avx512_bf16"))
    assert cpu.cpu_flags("") == set()


def test_keeping_freed_memory_is_applied_once_and_idempotent():
    first = cpu.retain_freed_memory()
    assert cpu.retain_freed_memory() is first
