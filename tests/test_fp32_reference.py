"""fp32 results are pinned to the last bit: the losses, parameter gradients, parameters,
EMA weights and carried states after a few training steps equal those recorded from the
implementation that preceded the CPU speed work (issue 14): same bytes (sha256), i.e.
torch.equal. The optimiser moments are not stored: the parameters after the last step depend
on them. Speed-ups may reorder work, never change a computed fp32 value.

The reference was written by the pre-optimisation code (trm_core of commit 7fa7453) with
`cd /tmp && PYTHONPATH=<old checkout>:<this checkout> python -m tests.test_fp32_reference`
(2 threads). Regenerate it only for an intended change of numerics, and say so in the commit:
`python -m tests.test_fp32_reference CASE …` rewrites only the cases named. trm_multiscale was
rewritten when each z_i got its own initial vector (issue 12, as the official trm_hier6).
Bit equality of float matmuls holds for one BLAS build on one instruction set, so there is one
reference per kind of machine (torch version, CPU capability, vendor, avx512/amx extensions):
`fp32_reference.pt` from an AMD EPYC, `fp32_reference.GenuineIntel-AVX512-<isa digest>.pt` from
an Intel Xeon with AMX (written the same way, by the code of 7fa7453 for every case but
trm_multiscale; there the current code agreed with 7fa7453 bit for bit in the other eight
cases). Running the module on a new kind of machine writes that machine's file. On a machine
with none, the comparison falls back to a tolerance relative to each tensor's scale against the
first reference and says so (skip).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

import trm_core
from tests.conftest import random_batch, tiny_model_config, tiny_train_config
from trm_core import ModelConfig, RecursiveReasoningModel, Trainer
from trm_core.cpu import cpu_flags

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "fp32_reference.pt"  # the first one (AMD EPYC); others are named by machine
STEPS = 3
SAMPLE = 64  # values kept per tensor for the tolerance check
CROSS_MACHINE = 1e-2  # tolerance, relative to a tensor's scale, on another BLAS build
TIMING_KEYS = ("step_time_s", "examples_per_s")

# The scale=mini shape (orchestration/conf/scale/mini.yaml): 6x6 Sudoku, hidden 32, T=3 n=6.
MINI = dict(
    vocab_size=8,
    seq_len=36,
    hidden=32,
    heads=2,
    expansion=2,
    swiglu_multiple=16,
    halt_max_steps=4,
    puzzle_emb_len=4,
    num_puzzle_ids=1,
)

CASES: dict[str, tuple[dict, int]] = {  # name: (tiny_model_config overrides, batch size)
    "trm_mlp": (dict(), 8),
    "trm_att": (dict(preset="trm_att"), 8),
    "hrm": (dict(preset="hrm", puzzle_emb_len=1), 8),
    "trm_dual_learned": (dict(preset="trm_dual", pos_encoding="learned"), 8),
    "trm_multiscale": (dict(preset="trm_multiscale"), 8),
    "trm_single_z": (dict(preset="trm_single_z"), 8),
    "trm_one_step": (dict(preset="trm_one_step"), 8),
    "mini_mlp": (dict(MINI, T=3, n=6), 32),
    "mini_att": (dict(MINI, preset="trm_att", T=3, n=6), 32),
}


def _direct_gradients(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Parameter and puzzle-row gradients of one training forward from random states."""
    torch.manual_seed(0)
    model = RecursiveReasoningModel(cfg)
    with torch.no_grad():  # non-trivial Q head and puzzle table so every path carries gradient
        model.q_head.weight.normal_()
        if model.puzzle_emb is not None:
            model.puzzle_emb.weight.normal_()
    batch = random_batch(cfg, 4, seed=1)
    g = torch.Generator().manual_seed(2)
    states = tuple(
        torch.randn(4, cfg.total_seq_len, cfg.hidden, generator=g)
        for _ in model.initial_states(1, torch.float32)
    )
    weights = torch.randn(4, cfg.seq_len, cfg.vocab_size, generator=g)
    out = model(states, batch["inputs"], batch["puzzle_ids"], track_grad=True)
    ((out.logits * weights).sum() + out.q_halt.sum() + out.q_continue.sum()).backward()
    grads = {f"grad.{n}": p.grad for n, p in model.named_parameters() if p.grad is not None}
    pending = model.puzzle_emb.take_pending() if model.puzzle_emb is not None else None
    if pending is not None:
        grads["grad.puzzle_rows"] = pending[1].grad
    grads["out.logits"] = out.logits.detach()
    grads["out.q"] = torch.stack((out.q_halt, out.q_continue)).detach()
    return grads


def _record(overrides: dict, batch_size: int) -> dict:
    mcfg = tiny_model_config(**overrides)
    tcfg = tiny_train_config(global_batch_size=batch_size, dtype="float32", compile="off")
    trainer = Trainer(mcfg, tcfg, device="cpu")
    metrics = []
    for seed in range(STEPS):
        m = trainer.train_step(random_batch(mcfg, batch_size, seed=seed))
        metrics.append({k: v for k, v in m.items() if k not in TIMING_KEYS})
    tensors = {f"model.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    if trainer.ema is not None:
        tensors.update({f"ema.{k}": v for k, v in trainer.ema.shadow.items()})
    tensors.update({f"carry.{i}": s for i, s in enumerate(trainer.carry.states)})
    tensors.update(_direct_gradients(mcfg))
    return {"metrics": metrics, "tensors": tensors}


def _cpu_isa() -> str:
    """The vector and matrix extensions /proc/cpuinfo lists (avx512*, amx*): CPUs of one
    vendor and one torch capability still differ in them, and BLAS kernels with them."""
    return "+".join(sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx"))))


def _cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id: the same instruction set (AVX512) still runs different BLAS
    kernels on AMD and on Intel (with AMX), which differ in the last bits."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _environment() -> dict:
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_vendor": _cpu_vendor(),
        "cpu_isa": _cpu_isa(),
    }


def _recorded_here(environment: dict) -> bool:
    """Whether a reference's recorded machine is this kind (every field it recorded equal:
    the first reference predates `cpu_isa`)."""
    here = _environment()
    return all(here.get(key) == value for key, value in environment.items())


def _pin(tensor: torch.Tensor) -> dict:
    """What the file keeps of a tensor: a digest of its bytes (bit equality), and a strided
    sample and float64 sum for the tolerance check (the whole tensor would be megabytes)."""
    flat = tensor.detach().contiguous().flatten()
    return {
        "sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest(),
        "dtype": str(flat.dtype),
        "shape": tuple(tensor.shape),
        "sample": flat[:: max(1, flat.numel() // SAMPLE)].clone(),
        "sum": flat.double().sum().item(),
    }


@pytest.fixture(scope="module")
def reference() -> dict:
    """The reference recorded on this kind of machine (bit equality), else the first one
    (tolerance)."""
    return torch.load(_reference_file_here() or REFERENCE, weights_only=False)


def _reference_file_here() -> Path | None:
    """The reference file recorded on this kind of machine, if there is one."""
    for path in sorted(DATA.glob("fp32_reference*.pt")):
        if _recorded_here(torch.load(path, weights_only=False)["environment"]):
            return path
    return None


@pytest.mark.parametrize("case", sorted(CASES))
def test_fp32_training_equals_the_recorded_reference_bit_for_bit(case, reference):
    expected = reference["cases"][case]
    record = _record(*CASES[case])
    got = {name: _pin(t) for name, t in record["tensors"].items()}
    exact = _recorded_here(reference["environment"])
    assert sorted(got) == sorted(expected["tensors"])
    for name, want in expected["tensors"].items():
        have = got[name]
        assert (have["dtype"], have["shape"]) == (want["dtype"], want["shape"]), name
        largest = (have["sample"] - want["sample"]).abs().max().item()
        if exact:
            assert have["sha256"] == want["sha256"], f"{case}: {name} (sample diff {largest})"
        else:
            # Another BLAS build (seen: the AMD reference vs an Intel Xeon with AMX, both
            # "AVX512") rounds differently, and three steps of the sign-like AdamATan2 update and
            # the recursion amplify last-bit differences: up to 0.4 % of a tensor's scale (the
            # carried states). Checked against the tensor's scale, well below a real change.
            scale = want["sample"].abs().max().item()
            assert largest <= CROSS_MACHINE * scale + 1e-6, f"{case}: {name} ({largest} of {scale})"
            spread = CROSS_MACHINE * scale * have["sample"].numel() ** 0.5 * 10
            assert have["sum"] == pytest.approx(want["sum"], rel=CROSS_MACHINE, abs=spread), name
    if exact:
        assert record["metrics"] == expected["metrics"]
    else:
        for have, want in zip(record["metrics"], expected["metrics"], strict=True):
            assert have == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_reference_was_recorded_where_bit_equality_is_checked(reference):
    """A different torch build or instruction set only gets the tolerance check above."""
    if not _recorded_here(reference["environment"]):
        pytest.skip(f"reference from {reference['environment']}, here {_environment()}")


def main(only: list[str]) -> None:
    """Write the reference for every case, or rewrite only the cases named (keeping the
    others' recorded values)."""
    torch.set_num_threads(2)
    # The pre-optimisation code indexed the token table (tok_emb[inputs]), whose backward
    # accumulates rows from 2 threads in no fixed order at the mini shape; deterministic mode
    # makes it the serial in-order sum, which is what F.embedding's backward computes.
    torch.use_deterministic_algorithms(True)
    env = _environment()
    isa = hashlib.sha256(env["cpu_isa"].encode()).hexdigest()[:8]
    named = f"{env['cpu_vendor']}-{env['cpu_capability']}-{isa}"
    target = _reference_file_here() or DATA / f"fp32_reference.{named}.pt"
    cases = torch.load(target, weights_only=False)["cases"] if only and target.exists() else {}
    for name, args in CASES.items():
        if only and name not in only:
            continue
        record = _record(*args)
        cases[name] = {
            "metrics": record["metrics"],
            "tensors": {key: _pin(t) for key, t in record["tensors"].items()},
        }
    target.parent.mkdir(exist_ok=True)
    torch.save({"environment": _environment(), "cases": cases}, target)
    size = target.stat().st_size / 1024
    written = only or sorted(cases)
    print(f"wrote {target} ({size:.0f} KiB) from {trm_core.__file__} for {written}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
