"""Data-parallel training (trm_core/distributed.py) with real gloo process groups: two ranks at
global batch B train what one process trains at B (parameters, puzzle embeddings, carry and
reported metrics equal within float tolerance: only the order of the gradient sums differs),
and a two-rank run stopped, saved and resumed by fresh trainers continues bit for bit."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from datasets.loader import TrainBatches, eval_batches
from tests.conftest import random_arrays, tiny_model_config, tiny_train_config
from trm_core import Trainer
from trm_core.distributed import Shard

STEPS = 6
TIMINGS = ("step_time_s", "examples_per_s")


def _configs(preset):
    return tiny_model_config(**preset), tiny_train_config()


def _train(preset, shard, resume_at=None):
    """STEPS steps from the same global batches; at `resume_at` the state is saved and a fresh
    trainer and loader continue from it. Returns (final state, per-step metrics)."""
    mcfg, tcfg = _configs(preset)
    data = random_arrays(mcfg)
    trainer = Trainer(mcfg, tcfg, "cpu", shard=shard)
    loader = TrainBatches(data, tcfg.global_batch_size, seed=0)
    batches = iter(loader)
    metrics = []
    for step in range(STEPS):
        if step == resume_at:
            state, position = trainer.state_dict(), loader.state_dict()
            trainer = Trainer(mcfg, tcfg, "cpu", shard=shard)
            trainer.load_state_dict(state)
            loader = TrainBatches(data, tcfg.global_batch_size, seed=0)
            loader.load_state_dict(position)
            batches = iter(loader)
        result = trainer.train_step(next(batches))
        metrics.append({k: v for k, v in result.items() if k not in TIMINGS})
    return trainer.state_dict(), metrics


def _rank(rank, world, init_file, out, job, *args):
    """One rank of a gloo group running `job(*args)`; rank 0 saves what it returns to `out`
    (every rank with `job.every_rank`, to `out.rank<r>`)."""
    # each rank's stderr in a file (a rank that aborts in C++ says why only there); gloo on the
    # loopback interface (traffic stays on this machine)
    os.dup2(os.open(f"{out}.rank{rank}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    if "lo" in {name for _, name in socket.if_nameindex()}:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = job(*args)
        if getattr(job, "every_rank", False):
            torch.save(result, f"{out}.rank{rank}")
        elif rank == 0:
            torch.save(result, out)
        dist.barrier()  # no rank tears the group down while another still uses it
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, name, job, *args, world=2):
    out = tmp_path / f"{name}.pt"
    try:
        mp.spawn(
            _rank, args=(world, str(tmp_path / f"{name}.init"), str(out), job, *args), nprocs=world
        )
    except mp.ProcessExitedException as err:
        said = {r: Path(f"{out}.rank{r}.err") for r in range(world)}
        said = {r: p.read_text()[-4000:] for r, p in said.items() if p.exists()}
        raise AssertionError(f"{err}; the ranks' stderr: {said}") from err
    if getattr(job, "every_rank", False):
        return [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(world)]
    return torch.load(out, weights_only=False)


def _train_on_group(preset, resume_at):
    return _train(preset, Shard.of_process_group(), resume_at)


def _two_ranks(tmp_path, preset, resume_at=None, name="run"):
    return _spawn(tmp_path, name, _train_on_group, preset, resume_at)


def _assert_close(a, b, exact: bool, where: str = "state") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_close(a[key], b[key], exact, f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, exact, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        if exact or not a.is_floating_point():
            assert torch.equal(a, b), where
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=where)
    elif isinstance(a, float) and not exact:
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), where
    else:
        assert a == b, where


PRESETS = [
    pytest.param({}, id="trm"),  # sparse puzzle embeddings, EMA, exploration
    pytest.param(dict(preset="hrm", puzzle_emb_len=1), id="hrm"),  # act_continue, dual
]


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_two_gloo_ranks_train_what_one_process_trains_at_the_same_global_batch(tmp_path, preset):
    one_state, one_metrics = _train(preset, shard=None)
    two_state, two_metrics = _two_ranks(tmp_path, preset)
    # every rank reports the global batch's figures: losses to float noise; a discrete figure
    # may differ where float noise flips a near-tie (one token of a batch in this test)
    _, tcfg = _configs(preset)
    for step, (one, two) in enumerate(zip(one_metrics, two_metrics, strict=True)):
        assert one.keys() == two.keys()
        for key in one:
            tolerance = 1.0 / (tcfg.global_batch_size * 8) if "accuracy" in key else 1e-5
            assert one[key] == pytest.approx(two[key], rel=1e-3, abs=tolerance), (step, key)
    # Weights: the first step agrees to ~1e-8; the float noise of the gradient sums then grows
    # through AdamATan2 and the recursion to ~2e-5 after six steps (updates are ~1e-3 a step).
    for key, weights in (("model", lambda s: s["model"]), ("ema", lambda s: s["ema"]["shadow"])):
        for name, one in weights(one_state).items():
            torch.testing.assert_close(
                one, weights(two_state)[name], rtol=0, atol=1e-4, msg=f"{key}.{name}"
            )
    assert one_state["step"] == two_state["step"] == STEPS
    # The carry, gathered into its global form: the same example in every slot, halted at the
    # same step; its latent states agree to float noise, which the T·(n+1)-deep recursion
    # amplifies from the weights' ~1e-6 differences (gradient sums in another order).
    one_carry, two_carry = one_state["carry"], two_state["carry"]
    _assert_close(one_carry["data"], two_carry["data"], exact=True, where="carry.data")
    assert torch.equal(one_carry["steps"], two_carry["steps"])
    assert torch.equal(one_carry["halted"], two_carry["halted"])
    for one, two in zip(one_carry["states"], two_carry["states"], strict=True):
        torch.testing.assert_close(one, two, rtol=0, atol=0.05 * float(one.abs().max()))
    # the sparse puzzle table was trained: the test is not of untouched rows
    emb = two_state["model"]["puzzle_emb.weight"]
    assert emb.abs().sum() > 0


@pytest.mark.slow
def test_a_two_rank_run_resumed_from_its_state_continues_bit_for_bit(tmp_path):
    straight, straight_metrics = _two_ranks(tmp_path, {}, name="straight")
    resumed, resumed_metrics = _two_ranks(tmp_path, {}, resume_at=3, name="resumed")
    for key in ("model", "ema", "optimizer", "carry", "step"):
        _assert_close(straight[key], resumed[key], exact=True, where=key)
    _assert_close(straight_metrics, resumed_metrics, exact=True, where="metrics")


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    mcfg, tcfg = _configs({})
    with pytest.raises(ValueError, match=r"global_batch_size=8 does not split over 3 workers"):
        Trainer(mcfg, tcfg, "cpu", shard=Shard(0, 3))
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, world_size=2\)"):
        Shard(2, 2)


class RecordingHook:
    """An evaluation hook that keeps everything it is handed, in order."""

    def __init__(self):
        self.seen = []

    def update(self, batch, predictions, q_halt_prob, valid):
        self.seen.append(
            [t.clone() for t in (batch["puzzle_ids"], predictions, q_halt_prob, valid)]
        )

    def compute(self):
        return {"rows_seen": float(sum(int(valid.sum()) for *_, valid in self.seen))}


def _evaluate_on_group():
    """Two training steps on the group, then its EMA weights evaluated on 40 puzzles in
    batches of 16 (three batches, the last padded; two ranks: one batch in the second round),
    split over the ranks and, for comparison, whole on every rank with the same weights."""
    mcfg, tcfg = _configs({})
    data = random_arrays(mcfg)
    trainer = Trainer(mcfg, tcfg, "cpu", shard=Shard.of_process_group())
    batches = iter(TrainBatches(data, tcfg.global_batch_size, seed=0))
    for _ in range(2):
        trainer.train_step(next(batches))
    scored, score_batch = [], trainer._score_batch
    trainer._score_batch = lambda batch, for_hooks: (
        scored.append(1) or score_batch(batch, for_hooks)
    )
    results = {}
    for how, shard in (("split", trainer.shard), ("whole", None)):
        trainer.shard, hook = shard, RecordingHook()
        scored.clear()
        metrics = trainer.evaluate(eval_batches(data, 16), [hook])
        results[how] = metrics, hook.seen, len(scored)
    return results


_evaluate_on_group.every_rank = True


@pytest.mark.slow
def test_two_ranks_split_the_evaluation_and_each_returns_the_one_process_metrics(tmp_path):
    for rank, result in enumerate(_spawn(tmp_path, "evaluate", _evaluate_on_group)):
        (split, split_seen, split_scored), (whole, whole_seen, whole_scored) = result.values()
        assert whole["rows_seen"] == whole["count"] == 40 and len(whole_seen) == 3
        assert (whole_scored, split_scored) == (3, [2, 1][rank])  # batches 0, 2 | batch 1
        assert split == whole  # exactly: each batch's scores folded in batch order
        _assert_close(split_seen, whole_seen, exact=True, where="hook")
