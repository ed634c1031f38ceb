"""Checkpoints between evaluations: every few minutes of training, and on SIGTERM (issue 13,
part 4).

A trial checkpoints at every evaluation, through Tune: 10 per run at paper scale, one every
≈ 3.6 h of a Sudoku run on one L40S, so a spot reclaim or a pod deletion could lose hours.
`PreemptionCheckpoints` (a TrainerCallback) also writes the trial's full state

- every `scale.checkpoint_every_min` minutes of training (on at paper scale), and
- when the worker gets SIGTERM (what Kubernetes and spot reclaims send before the kill, with a
  grace period), at the end of the step in flight; the attempt then ends with `Preempted`,
  so Tune retries the trial.

These go straight into the trial's folder in Tune's storage as its next checkpoint folder
(`checkpoint_<last + 1>`), published whole (written beside, then moved into place), without
Tune's knowledge: the trainable's restore (orchestration/resume.py) starts from the trial's
newest complete checkpoint, so the retry, or a rerun of the suite, continues from the step the
trial was stopped at, and its next evaluation equals that of an uninterrupted run. A trial
restored from one numbers its next checkpoints on from it; otherwise the next evaluation's
checkpoint (Tune's) takes the same folder number and supersedes it.

Uses the Ray Train session's storage (`StorageContext`) of the pinned Ray version.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from trm_core import Trainer, TrainerCallback

PREEMPTED = threading.Event()  # set by SIGTERM in this worker process while it trains
TRAINING = threading.Event()  # set while a trial of this worker trains (`training()`)


class Preempted(RuntimeError):
    """The attempt was stopped by SIGTERM after checkpointing; Tune retries the trial."""


def stop_on_sigterm() -> None:
    """From the worker's main thread (signal handlers can be set only there): SIGTERM while a
    trial trains marks the process preempted instead of ending it, and the training thread
    checkpoints and stops; SIGTERM at any other time does what it did before (Ray's handler,
    or the default: the process ends)."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:
        if TRAINING.is_set():
            print("SIGTERM: checkpointing at the end of this step, then stopping", file=sys.stderr)
            PREEMPTED.set()
        elif callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    if not getattr(previous, "preemption_handler", False):  # once per process
        on_sigterm.preemption_handler = True
        signal.signal(signal.SIGTERM, on_sigterm)


@contextlib.contextmanager
def training() -> Iterator[None]:
    """The block in which SIGTERM means "checkpoint and stop" (a trial's training)."""
    PREEMPTED.clear()
    TRAINING.set()
    try:
        yield
    finally:
        TRAINING.clear()


def write_to_trial_storage(state: dict[str, Any], filename: str) -> str:
    """`state` saved as the trial's next checkpoint folder in Tune's storage, published whole;
    returns the folder's path."""
    from ray.train._internal.session import get_session

    storage = get_session().storage
    folder = f"{storage.trial_fs_path}/checkpoint_{storage.current_checkpoint_index + 1:06d}"
    return publish_checkpoint(storage.storage_filesystem, folder, state, filename)


def publish_checkpoint(filesystem, folder: str, state: dict[str, Any], filename: str) -> str:
    """`state` saved as `folder`/`filename` (pyarrow `filesystem`: local or S3), published
    whole: written beside, then moved into place. Returns `folder`."""
    filesystem.create_dir(folder)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    partial = f"{folder}/.{filename}.partial"
    with filesystem.open_output_stream(partial) as out:
        out.write(buffer.getbuffer())
    filesystem.move(partial, f"{folder}/{filename}")  # a rename locally; one object on S3
    return folder


class PreemptionCheckpoints(TrainerCallback):
    """Checkpoint every `every_s` seconds of training (None: never on time) and on SIGTERM.
    An evaluation step is left to the evaluation's own checkpoint (Tune's); SIGTERM during one
    stops right after it. Comes after the callback that reports evaluations."""

    def __init__(
        self,
        save: Callable[[Trainer], str],
        every_s: float | None,
        eval_every: int,
        total_steps: int,
        agree: Callable[[list[bool]], list[bool]] | None = None,
    ):
        """`agree`: in a worker group, makes every rank take the same decisions (whether any
        rank was stopped, whether any rank's timer is due): saving is a collective there."""
        self.save, self.every_s = save, every_s
        self.agree = agree or (lambda flags: flags)
        self.eval_every, self.total_steps = eval_every, total_steps
        self.last = time.monotonic()

    def _stop(self, trainer: Trainer, where: str) -> None:
        raise Preempted(
            f"SIGTERM at step {trainer.step}: checkpointed ({where}); Tune retries the trial "
            "from there"
        )

    def on_train_step(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.step % self.eval_every == 0 or trainer.step >= self.total_steps:
            return  # this step is evaluated and checkpointed next
        due = self.every_s is not None and time.monotonic() - self.last >= self.every_s
        preempted, due = self.agree([PREEMPTED.is_set(), due])
        if preempted:
            self._stop(trainer, self.save(trainer))
        if due:
            self.save(trainer)
            self.last = time.monotonic()

    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.last = time.monotonic()
        (preempted,) = self.agree([PREEMPTED.is_set()])
        if preempted and trainer.step < self.total_steps:  # at the end: just finish
            self._stop(trainer, "the evaluation's checkpoint")
