"""CUDA correctness (skips without a GPU): bf16 training steps on CUDA track fp32 CPU steps, the
carry stays on the device, and resume works across the device boundary."""

import pytest
import torch

from tests.conftest import random_batch, tiny_model_config, tiny_train_config
from trm_core import Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("preset", ["trm_mlp", "trm_att", "hrm"])
def test_cuda_bf16_training_tracks_cpu_fp32(preset):
    mcfg = tiny_model_config(preset=preset, hidden=64, heads=4)
    tcfg = tiny_train_config(compile="off")
    cpu, gpu = Trainer(mcfg, tcfg, "cpu"), Trainer(mcfg, tcfg, "cuda")
    assert gpu.dtype == torch.bfloat16
    for seed in range(3):
        batch = random_batch(mcfg, 8, seed)
        a, b = cpu.train_step(batch), gpu.train_step(batch)
        assert torch.isfinite(torch.tensor(b["loss"]))
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05)
    assert gpu.carry.states[0].device.type == "cuda"
    assert gpu.carry.states[0].dtype == torch.bfloat16


def test_compiled_cuda_step_runs():
    mcfg = tiny_model_config(hidden=64, heads=4)
    trainer = Trainer(mcfg, tiny_train_config(compile="on"), "cuda")
    for seed in range(3):
        assert torch.isfinite(torch.tensor(trainer.train_step(random_batch(mcfg, 8, seed))["loss"]))


def test_checkpoint_moves_from_cuda_to_cpu():
    mcfg, tcfg = tiny_model_config(), tiny_train_config(dtype="float32", compile="off")
    gpu = Trainer(mcfg, tcfg, "cuda")
    gpu.train_step(random_batch(mcfg, 8, 0))
    cpu = Trainer(mcfg, tcfg, "cpu")
    cpu.load_state_dict(gpu.state_dict())
    assert cpu.step == 1
    cpu.train_step(random_batch(mcfg, 8, 1))
