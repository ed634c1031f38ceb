"""The Trainer: model, optimisers, EMA and carry for deep-supervised training, usable without Ray.

    trainer = Trainer(ModelConfig.from_preset("trm_mlp"), TrainConfig(global_batch_size=64))
    trainer.fit(train_batches, total_steps=1000, eval_batches=lambda: test_batches,
                eval_every=250, callbacks=[PrintMetrics()])

A batch is a mapping with `inputs` [B, seq_len] and `labels` [B, seq_len] (integer tokens,
IGNORE_LABEL = −100 where there is no target) and `puzzle_ids` [B]; numpy arrays or tensors.
Other keys are passed through to evaluation hooks. Training batches must hold exactly
`train.global_batch_size` rows: they refill the carried slots (§1.6).

`state_dict()` holds everything needed for exact resume: model, EMA, both optimisers, the carry,
the RNG states and the step. The data position belongs to the loader: checkpoint it beside.

With `shard=Shard(rank, world_size)` the Trainer is one rank of data-parallel training over the
default torch.distributed group: it is still given the global batch and trains on its rows,
with the one-process run's maths (trm_core/distributed.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from trm_core.act import MODEL_INPUT_KEYS, Carry, initial_carry, supervision_step, would_halt
from trm_core.config import ModelConfig, TrainConfig
from trm_core.cpu import auto_cpu_dtype, retain_freed_memory
from trm_core.distributed import Shard, all_reduce_sum_, gather_rows, sharded_in_order
from trm_core.ema import EMA
from trm_core.evaluation import EvalAccumulator, EvalHook
from trm_core.losses import IGNORE_LABEL, act_loss, sequence_correctness, token_cross_entropy
from trm_core.model import RecursiveReasoningModel, count_parameters
from trm_core.optim import AdamATan2, SignSGD, warmup_lr

STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Prediction:
    """`Trainer.predict`'s answer for one batch, per supervision step (CPU tensors)."""

    tokens: torch.Tensor  # int16 [steps, B, L]: argmax token of every position
    q_halt_prob: torch.Tensor  # float32 [steps, B]: σ(q_halt)
    halts: torch.Tensor  # bool [steps, B]: the Q head's halting decision (no exploration)


class TrainerCallback:
    """Override what you need; every method is optional."""

    def on_train_step(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        pass

    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """Called after every evaluation; the natural place to checkpoint."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(name: str, device: torch.device, hidden: int) -> tuple[torch.dtype, str]:
    """The forward dtype for `train.dtype` on `device`, and why (§1.1 "Precision"). On a CPU,
    `auto` is bf16 only where it multiplies bf16 natively and the model is wide enough."""
    if name != "auto":
        return getattr(torch, name), "set by train.dtype"
    if device.type == "cuda":
        return torch.bfloat16, "CUDA: bf16 forward as upstream"
    if device.type == "cpu":
        choice = auto_cpu_dtype(hidden)
        return choice.dtype, choice.reason
    return torch.float32, f"{device.type}: float32"


def weights_only(state: Mapping[str, Any]) -> dict[str, Any]:
    """What evaluating needs of a `Trainer.state_dict()`: configs, step, model and EMA weights;
    no optimiser, carry or RNG. An old evaluation's checkpoint slimmed to this can still be
    re-scored (`Trainer.load_weights`), not resumed."""
    return {
        k: state[k] for k in ("version", "model_config", "train_config", "step", "model", "ema")
    }


class Trainer:
    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        device: str | torch.device | None = None,
        shard: Shard | None = None,
    ):
        self.model_config = model_config
        self.train_config = train_config
        self.device = resolve_device(device)
        self.shard = shard
        # this rank's slots of the global batch (None: all of them, one process)
        self.rows = shard.rows(train_config.global_batch_size) if shard else None
        on_cuda = self.device.type == "cuda"
        self.dtype, self.dtype_reason = resolve_dtype(
            train_config.dtype, self.device, model_config.hidden
        )
        if self.device.type == "cpu":
            retain_freed_memory()  # no value changes; see trm_core.cpu

        # Model init draws from its own seeded stream so it does not depend on (or disturb)
        # whatever the caller did with the global RNG.
        cuda_devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(train_config.seed)
            self.model = RecursiveReasoningModel(model_config).to(self.device)
        if train_config.compile == "on" or (train_config.compile == "auto" and on_cuda):
            self.model.compile_nets()

        tc = train_config
        self.optimizer = AdamATan2(
            self.model.parameters(),
            lr=tc.lr,
            betas=(tc.beta1, tc.beta2),
            weight_decay=tc.weight_decay,
        )
        self.sparse_optimizer = (
            SignSGD(
                self.model.puzzle_emb,
                tc.puzzle_emb_lr,
                tc.puzzle_emb_weight_decay,
                gather=shard is not None,
            )
            if self.model.puzzle_emb is not None
            else None
        )
        self.ema = EMA(self.model, tc.ema_rate) if tc.ema else None
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(tc.seed)
        self.carry: Carry | None = None
        self.step = 0

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.model)

    # ---- batches ------------------------------------------------------------------------
    def _prepare(self, batch: Mapping[str, Any], training: bool) -> tuple[dict, dict]:
        """Validate on the host, then move the model inputs to the device."""
        cfg = self.model_config
        missing = [k for k in MODEL_INPUT_KEYS if k not in batch]
        if missing:
            raise ValueError(f"batch is missing {missing}; a batch needs {list(MODEL_INPUT_KEYS)}")
        host = {k: torch.as_tensor(v) for k, v in batch.items()}
        inputs, labels, ids = host["inputs"], host["labels"], host["puzzle_ids"]
        if inputs.dim() != 2 or inputs.shape[1] != cfg.seq_len:
            raise ValueError(
                f"batch 'inputs' has shape {tuple(inputs.shape)}; expected "
                f"[batch, model.seq_len={cfg.seq_len}]"
            )
        if labels.shape != inputs.shape:
            raise ValueError(
                f"batch 'labels' has shape {tuple(labels.shape)}; expected "
                f"{tuple(inputs.shape)} like 'inputs'"
            )
        if ids.shape != inputs.shape[:1]:
            raise ValueError(
                f"batch 'puzzle_ids' has shape {tuple(ids.shape)}; expected [{inputs.shape[0]}]"
            )
        if training and inputs.shape[0] != self.train_config.global_batch_size:
            raise ValueError(
                f"training batch has {inputs.shape[0]} rows; the carry has "
                f"train.global_batch_size={self.train_config.global_batch_size} slots"
            )
        if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= cfg.vocab_size):
            raise ValueError(
                f"batch 'inputs' holds tokens in [{int(inputs.min())}, "
                f"{int(inputs.max())}]; allowed is [0, model.vocab_size={cfg.vocab_size})"
            )
        bad_labels = (labels != IGNORE_LABEL) & ((labels < 0) | (labels >= cfg.vocab_size))
        if bool(bad_labels.any()):
            raise ValueError(
                f"batch 'labels' holds values outside [0, model.vocab_size="
                f"{cfg.vocab_size}) that are not IGNORE_LABEL ({IGNORE_LABEL})"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg.num_puzzle_ids):
            raise ValueError(
                f"batch 'puzzle_ids' holds [{int(ids.min())}, {int(ids.max())}]; "
                f"allowed is [0, model.num_puzzle_ids={cfg.num_puzzle_ids})"
            )
        device_batch = {
            "inputs": inputs.to(self.device, torch.int32, non_blocking=True),
            "labels": labels.to(self.device, torch.int64, non_blocking=True),
            "puzzle_ids": ids.to(self.device, torch.int64, non_blocking=True),
        }
        return host, device_batch

    # ---- training -----------------------------------------------------------------------
    def _set_learning_rates(self) -> float:
        tc = self.train_config
        lr = warmup_lr(tc.lr, self.step, tc.lr_warmup_steps, tc.total_steps, tc.lr_min_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.sparse_optimizer is not None:
            self.sparse_optimizer.lr = warmup_lr(
                tc.puzzle_emb_lr, self.step, tc.lr_warmup_steps, tc.total_steps, tc.lr_min_ratio
            )
        return lr

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimizer step = one supervision step for every carried slot."""
        started = time.perf_counter()
        _, data = self._prepare(batch, training=True)
        tc = self.train_config
        if self.rows is not None:
            data = {k: v[self.rows] for k, v in data.items()}
        if self.carry is None:
            self.carry = initial_carry(self.model, data, self.dtype)
        self.model.train()
        self.step += 1
        lr = self._set_learning_rates()

        self.carry, result = supervision_step(
            self.model,
            self.carry,
            data,
            training=True,
            generator=self.generator,
            draw_rows=None if self.rows is None else (tc.global_batch_size, self.rows.start),
        )
        out = result.output
        labels = self.carry.data["labels"]
        total, parts = act_loss(
            out.logits,
            labels,
            out.q_halt,
            out.q_continue,
            result.target_q_continue,
            tc.loss,
            tc.q_loss_weight,
        )
        batch_size = tc.global_batch_size
        (total / tc.global_batch_size).backward()
        if self.shard is not None:  # the global mean's gradient: sum over ranks
            all_reduce_sum_([p.grad for p in self.model.parameters() if p.grad is not None])
        self.optimizer.step()
        if self.sparse_optimizer is not None:
            self.sparse_optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

        # Sequence metrics count halted sequences only, as upstream (§1.7).
        with torch.no_grad():
            done = self.carry.halted & (parts["valid_counts"] > 0)
            seq_ok = parts["seq_is_correct"]
            q_ok = (out.q_halt >= 0) == seq_ok
            sums = torch.stack(
                [
                    done.sum().double(),
                    (seq_ok & done).sum().double(),
                    torch.where(done, parts["token_fraction"], 0).sum().double(),
                    (q_ok & done).sum().double(),
                    torch.where(done, self.carry.steps, 0).sum().double(),
                    total.detach().double(),
                    parts["lm_loss"].double(),
                    parts["q_halt_loss"].double(),
                    parts["q_continue_loss"].double(),
                ]
            )
            if self.shard is not None:  # every rank reports the global batch's figures
                all_reduce_sum_([sums])
            sums = sums.tolist()  # one host sync per step
        halted, exact, token, q_acc, steps, loss, lm, qh, qc = sums
        elapsed = time.perf_counter() - started
        per_halted = max(halted, 1.0)
        return {
            "step": float(self.step),
            "lr": lr,
            "loss": loss / batch_size,
            "lm_loss": lm / batch_size,
            "q_halt_loss": qh / batch_size,
            "q_continue_loss": qc / batch_size,
            "halted": halted,
            "exact_accuracy": exact / per_halted,
            "token_accuracy": token / per_halted,
            "q_halt_accuracy": q_acc / per_halted,
            "halt_step": steps / per_halted,
            "step_time_s": elapsed,
            "examples_per_s": batch_size / elapsed,
        }

    # ---- evaluation ---------------------------------------------------------------------
    @contextlib.contextmanager
    def evaluation_weights(self):
        """The block in which `predict` runs: the EMA weights (when trained with EMA, §2.1),
        eval mode, no autograd. Entered once for many batches (the swap copies every weight)."""
        self.model.eval()
        weights = self.ema.applied(self.model) if self.ema else contextlib.nullcontext()
        with weights, torch.inference_mode():
            yield

    def predict(self, batch: Mapping[str, Any], supervision_steps: int) -> Prediction:
        """Every row run for `supervision_steps` supervision steps, none halted early (may be
        more than the `halt_max_steps` trained with: deeper test-time recursion); call inside
        `evaluation_weights()`. Returns per step the predicted tokens, σ(q_halt) and whether
        the Q head says halt, on the CPU, so a protocol can pick any step after the fact."""
        if supervision_steps < 1:
            raise ValueError(f"supervision_steps={supervision_steps} must be >= 1")
        _, data = self._prepare(batch, training=False)
        carry = initial_carry(self.model, data, self.dtype)
        tokens, q_halt, halts = [], [], []
        for _ in range(supervision_steps):
            # halt_max_steps only sets when a training slot restarts: in evaluation no slot is
            # ever reset after the first step, so running past it is a deeper recursion.
            carry.halted = torch.zeros_like(carry.halted) if tokens else carry.halted
            carry, result = supervision_step(self.model, carry, data, training=False)
            out = result.output
            tokens.append(out.logits.argmax(-1).to(torch.int16).cpu())
            q_halt.append(torch.sigmoid(out.q_halt.float()).cpu())
            halts.append(would_halt(self.model, out).cpu())
        return Prediction(torch.stack(tokens), torch.stack(q_halt), torch.stack(halts))

    def evaluate(
        self, batches: Iterable[Mapping[str, Any]], hooks: Sequence[EvalHook] = ()
    ) -> dict[str, float]:
        """Run every test sequence for all `halt_max_steps` steps with the EMA weights.

        With a shard the ranks split the batches (rank r scores batches r, r+W, ...) and every
        rank then folds every batch's scores in batch order, so each returns the one-process
        metrics exactly (per-batch values do not depend on which rank computed them)."""
        accumulator = EvalAccumulator(self.model_config.halt_max_steps)
        self.model.eval()
        weights = self.ema.applied(self.model) if self.ema else contextlib.nullcontext()
        score_batch = functools.partial(self._score_batch, for_hooks=bool(hooks))
        if self.shard is None:
            scores = map(score_batch, batches)
        else:
            scores = sharded_in_order(batches, score_batch, self.shard)
        with weights, torch.inference_mode():
            for score in scores:
                accumulator.add(**score["accumulate"])
                for hook in hooks:
                    hook.update(*score["hooks"])
        metrics = accumulator.compute()
        for hook in hooks:
            metrics.update(hook.compute())
        return metrics

    def _score_batch(self, batch: Mapping[str, Any], for_hooks: bool) -> dict[str, Any]:
        """One evaluation batch: what the accumulator needs and, `for_hooks`, what the hooks
        need, on the CPU (with a shard, this is what travels between the ranks)."""
        cfg = self.model_config
        host, data = self._prepare(batch, training=False)
        size = data["inputs"].shape[0]
        carry = initial_carry(self.model, data, self.dtype)
        halt_step = torch.full((size,), cfg.halt_max_steps, device=self.device)
        decided = torch.zeros(size, dtype=torch.bool, device=self.device)
        exact_by_step = []
        for step in range(cfg.halt_max_steps):
            carry, result = supervision_step(self.model, carry, data, training=False)
            out = result.output
            preds, fraction, seq_ok, counts = sequence_correctness(out.logits, data["labels"])
            exact_by_step.append(seq_ok.cpu())
            newly = would_halt(self.model, out) & ~decided
            halt_step = torch.where(newly, step + 1, halt_step)
            decided |= newly
        per_token = token_cross_entropy(out.logits, data["labels"], self.train_config.loss)
        valid = (counts > 0).cpu()
        return {
            "accumulate": dict(
                valid=valid,
                exact_final=seq_ok.cpu(),
                token_fraction=fraction.cpu(),
                lm_loss_per_seq=(per_token.sum(-1) / counts.clamp_min(1)).cpu(),
                halt_step=halt_step.cpu(),
                q_halt_correct=((out.q_halt >= 0) == seq_ok).cpu(),
                exact_by_step=exact_by_step,
            ),
            "hooks": (host, preds.cpu(), torch.sigmoid(out.q_halt).cpu(), valid)
            if for_hooks
            else None,
        }

    # ---- loop ---------------------------------------------------------------------------
    def fit(
        self,
        train_batches: Iterable[Mapping[str, Any]],
        total_steps: int,
        *,
        eval_batches: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
        eval_every: int | None = None,
        hooks: Callable[[], Sequence[EvalHook]] | None = None,
        callbacks: Sequence[TrainerCallback] = (),
    ) -> dict[str, float]:
        """Train from the current step up to `total_steps`, evaluating every `eval_every`
        steps and at the end. Returns the last evaluation's metrics ({} without eval data)."""
        if eval_every is not None and eval_every < 1:
            raise ValueError(f"eval_every={eval_every} must be >= 1 (or None for the end only)")
        batches = iter(train_batches)
        last_eval: dict[str, float] = {}
        while self.step < total_steps:
            try:
                batch = next(batches)
            except StopIteration:
                raise ValueError(
                    f"train_batches ran out at step {self.step} of {total_steps}; "
                    "give an endless (epoch-cycling) iterator"
                ) from None
            metrics = self.train_step(batch)
            for callback in callbacks:
                callback.on_train_step(self, metrics)
            at_interval = eval_every is not None and self.step % eval_every == 0
            if eval_batches is not None and (at_interval or self.step == total_steps):
                last_eval = self.evaluate(eval_batches(), hooks() if hooks else ())
                for callback in callbacks:
                    callback.on_evaluate(self, last_eval)
        return last_eval

    # ---- exact resume -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        rng = {
            "generator": self.generator.get_state(),
            "torch": torch.get_rng_state(),
            "device_type": self.device.type,
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "version": STATE_VERSION,
            "model_config": dataclasses.asdict(self.model_config),
            "train_config": dataclasses.asdict(self.train_config),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sparse_optimizer": self.sparse_optimizer.state_dict()
            if self.sparse_optimizer
            else None,
            "ema": self.ema.state_dict() if self.ema else None,
            "carry": self._global_carry_state(),
            "rng": rng,
        }

    def _global_carry_state(self) -> dict[str, Any] | None:
        """The carry of all slots; with a shard gathered from every rank (a collective)."""
        if self.carry is None:
            return None
        state = self.carry.state_dict()
        if self.shard is None:
            return state
        return _map_rows(state, _gather_any)

    def load_weights(self, state: Mapping[str, Any]) -> None:
        """Load the model and EMA weights of a full or slimmed state (see `weights_only`);
        the configs must match as for `load_state_dict`."""
        self._check_compatible(state)
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])

    def _check_compatible(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"checkpoint version {state.get('version')!r} is not supported; "
                f"this trainer reads version {STATE_VERSION}"
            )
        saved = state["model_config"]
        ours = dataclasses.asdict(self.model_config)
        differing = sorted(k for k in ours if saved.get(k) != ours[k])
        # The carry is sized and typed by these; the rest of the recipe may change on resume.
        differing += [
            f"train.{k}"
            for k in ("global_batch_size", "dtype")
            if state["train_config"].get(k) != getattr(self.train_config, k)
        ]
        if differing:
            raise ValueError(
                f"checkpoint was made with a different config; differing fields: {differing}"
            )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_compatible(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.sparse_optimizer is not None and state["sparse_optimizer"] is not None:
            self.sparse_optimizer.load_state_dict(state["sparse_optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        carry = state["carry"]
        if carry is not None and self.rows is not None:  # this rank's slots of the global carry
            carry = _map_rows(carry, lambda t: t[self.rows])
        self.carry = Carry.from_state_dict(carry, self.device) if carry is not None else None
        if state["rng"].get("device_type", "cpu") == self.device.type:
            self.generator.set_state(state["rng"]["generator"])
        else:  # generator states do not transfer across device types: reseed deterministically
            self.generator.manual_seed(self.train_config.seed * 1_000_003 + int(state["step"]))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])


def _map_rows(carry: Mapping[str, Any], fn: Callable[[torch.Tensor], torch.Tensor]):
    """A carry state with `fn` applied to every per-slot tensor."""
    return {
        "states": [fn(t) for t in carry["states"]],
        "steps": fn(carry["steps"]),
        "halted": fn(carry["halted"]),
        "data": {k: fn(v) for k, v in carry["data"].items()},
    }


def _gather_any(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype == torch.bool:  # gloo gathers no bool tensors
        return gather_rows(tensor.to(torch.uint8)).to(torch.bool)
    return gather_rows(tensor)
