"""The Trainer: exact resume (k steps, save, load into a fresh trainer and loader, k more steps
equals 2k straight steps), evaluation on EMA weights with no early halting, and clear errors for
bad batches."""

import io

import numpy as np
import pytest
import torch

from datasets.loader import TrainBatches, eval_batches
from tests.conftest import random_arrays, random_batch, tiny_model_config, tiny_train_config
from trm_core import Trainer, TrainerCallback


class Record(TrainerCallback):
    def __init__(self):
        self.train, self.evals = [], []

    def on_train_step(self, trainer, metrics):
        self.train.append(
            {k: v for k, v in metrics.items() if k not in ("step_time_s", "examples_per_s")}
        )

    def on_evaluate(self, trainer, metrics):
        self.evals.append(metrics)


@pytest.mark.parametrize(
    "preset_overrides",
    [
        dict(),
        dict(preset="hrm", puzzle_emb_len=1),  # act_continue, dual net, one-step gradient
    ],
)
def test_resume_from_state_dict_is_exact(preset_overrides):
    mcfg = tiny_model_config(**preset_overrides)
    tcfg = tiny_train_config()
    train = random_arrays(mcfg)
    test = random_arrays(mcfg, examples=12, seed=1)

    def run(trainer, loader, steps, record):
        return trainer.fit(
            loader,
            steps,
            eval_batches=lambda: eval_batches(test, 5),
            eval_every=3,
            callbacks=[record],
        )

    straight = Record()
    run(Trainer(mcfg, tcfg), TrainBatches(train, 8, seed=3), 12, straight)

    first_half = Record()
    trainer, loader = Trainer(mcfg, tcfg), TrainBatches(train, 8, seed=3)
    run(trainer, loader, 6, first_half)
    buffer = io.BytesIO()
    torch.save({"trainer": trainer.state_dict(), "loader": loader.state_dict()}, buffer)
    del trainer, loader
    torch.manual_seed(12345)  # a fresh process would not share the global RNG either

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    resumed, loader = Trainer(mcfg, tcfg), TrainBatches(train, 8, seed=3)
    resumed.load_state_dict(saved["trainer"])
    loader.load_state_dict(saved["loader"])
    second_half = Record()
    run(resumed, loader, 12, second_half)

    assert first_half.train + second_half.train == straight.train
    assert first_half.evals + second_half.evals == straight.evals
    assert len(straight.evals) == 4


def test_evaluation_uses_the_ema_weights_and_restores_the_raw_ones():
    mcfg, tcfg = tiny_model_config(), tiny_train_config(ema_rate=0.5)
    test = random_arrays(mcfg, examples=6, seed=1)
    trainer = Trainer(mcfg, tcfg)
    loader = TrainBatches(random_arrays(mcfg), 8, seed=0)
    for _ in range(3):
        trainer.train_step(next(loader))
    raw = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with_ema = trainer.evaluate(eval_batches(test, 6))
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p, raw[name])
    no_ema = Trainer(mcfg, tcfg.replace(ema=False))
    no_ema.load_state_dict({**trainer.state_dict(), "ema": None})
    with torch.no_grad():
        for name, p in no_ema.model.named_parameters():
            p.copy_(trainer.ema.shadow[name])
    assert no_ema.evaluate(eval_batches(test, 6)) == with_ema


def test_evaluation_runs_all_steps_and_skips_padding_rows():
    mcfg, tcfg = tiny_model_config(), tiny_train_config()
    trainer = Trainer(mcfg, tcfg)
    metrics = trainer.evaluate(eval_batches(random_arrays(mcfg, examples=7), 5))  # 5 + 2 (3 padded)
    assert metrics["count"] == 7
    assert metrics["halt_step"] == mcfg.halt_max_steps  # the untrained Q head never halts
    assert {f"exact_accuracy/step={i}" for i in range(1, 5)} <= set(metrics)


def test_bad_batches_name_what_is_wrong():
    mcfg, tcfg = tiny_model_config(), tiny_train_config()
    trainer = Trainer(mcfg, tcfg)
    good = random_batch(mcfg, 8, seed=0)
    with pytest.raises(ValueError, match=r"missing \['puzzle_ids'\]"):
        trainer.train_step({k: v for k, v in good.items() if k != "puzzle_ids"})
    with pytest.raises(ValueError, match=r"train.global_batch_size=8 slots"):
        trainer.train_step(random_batch(mcfg, 5, seed=0))
    with pytest.raises(ValueError, match=r"model.seq_len=8"):
        trainer.train_step(
            {**good, "inputs": good["inputs"][:, :5], "labels": good["labels"][:, :5]}
        )
    with pytest.raises(ValueError, match=r"model.vocab_size=6"):
        trainer.train_step({**good, "inputs": good["inputs"] + 6})
    with pytest.raises(ValueError, match=r"model.num_puzzle_ids=3"):
        trainer.train_step({**good, "puzzle_ids": good["puzzle_ids"] + 3})
    with pytest.raises(ValueError, match=r"ran out at step 0"):
        trainer.fit([], 2)


def test_checkpoint_from_another_model_config_is_refused():
    trainer = Trainer(tiny_model_config(), tiny_train_config())
    other = Trainer(tiny_model_config(n=3), tiny_train_config())
    with pytest.raises(ValueError, match=r"differing fields: \['n'\]"):
        other.load_state_dict(trainer.state_dict())


@pytest.mark.parametrize(
    "preset",
    [
        "trm_att",
        "hrm",
        "trm_single_z",
        "trm_multiscale",
        "trm_dual",
        "trm_one_step",
        "trm_act_continue",
    ],
)
def test_every_variant_trains_a_step(preset):
    mcfg = tiny_model_config(
        preset=preset,
        pos_encoding="learned"
        if preset == "trm_dual"
        else tiny_model_config(preset=preset).pos_encoding,
    )
    trainer = Trainer(mcfg, tiny_train_config())
    metrics = trainer.train_step(random_batch(mcfg, 8, seed=0))
    assert np.isfinite(metrics["loss"]) and metrics["loss"] > 0
    before = trainer.model.tok_emb.detach().clone()
    trainer.train_step(random_batch(mcfg, 8, seed=1))
    assert not torch.equal(before, trainer.model.tok_emb)


@pytest.mark.slow
def test_compiled_training_matches_eager():
    mcfg, tcfg = tiny_model_config(), tiny_train_config()
    batches = [random_batch(mcfg, 8, seed=s) for s in range(3)]
    eager, compiled = Trainer(mcfg, tcfg), Trainer(mcfg, tcfg.replace(compile="on"))
    for batch in batches:
        a, b = eager.train_step(batch), compiled.train_step(batch)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
