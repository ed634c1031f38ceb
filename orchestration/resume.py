"""A trial's restore that always makes progress (issue 15).

Tune restores a trial from the checkpoint its saved experiment state names. That state is
written every few seconds, so at a rerun it can name a checkpoint that is gone (an older
retention setting deleted it, a store lost it), only partly written (its upload cut by an
outage or a kill), or older than the trial's newest, or none at all (the newest was written
after the state's last save): Tune then failed the trial at every retry, for good, or retrained
steps it had. The trainable `resumable(run_trial)` builds starts every attempt from the newest
complete checkpoint in the trial's folder (one holding CHECKPOINT_FILE), whatever the state
names, or afresh when there is none, and says so on stderr. A newer checkpoint than the one
named is the trial's own later progress; checkpoints written after it are numbered on from it
(none is overwritten), and metrics of steps already logged are not logged again (trial.py).

Uses Ray Tune internals of the pinned Ray version (`_TrainingResult`, `Trainable._storage`, the
train session); tests/orchestration/test_ablate.py and test_outage.py cover it end to end.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")


def newest_complete_checkpoint(
    filesystem, trial_dir: str, required_file: str
) -> tuple[int, str] | None:
    """(index, path) of the highest-numbered checkpoint folder in `trial_dir` holding
    `required_file`, or None."""
    from pyarrow import fs

    try:
        entries = filesystem.get_file_info(fs.FileSelector(trial_dir, allow_not_found=True))
    except OSError:
        return None
    candidates = sorted(
        (
            (int(match.group(1)), entry.path)
            for entry in entries
            if entry.type == fs.FileType.Directory
            and (match := CHECKPOINT_DIR.match(entry.base_name))
        ),
        reverse=True,
    )
    for index, path in candidates:
        info = filesystem.get_file_info(f"{path}/{required_file}")
        if info.type == fs.FileType.File:
            return index, path
    return None


def resumable(train_function: Callable, required_file: str):
    """`train_function` as a Tune trainable class whose restore falls back (module docstring)."""
    from ray import tune
    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.train._internal.session import get_session
    from ray.tune.trainable.function_trainable import wrap_function

    from orchestration.preemption import stop_on_sigterm

    base = wrap_function(train_function)

    class Resumable(base):
        def setup(self, config):
            try:  # the actor's main thread: the only one that may set a signal handler
                stop_on_sigterm()
            except ValueError as err:
                print(f"SIGTERM will not checkpoint in this worker: {err}", file=sys.stderr)
            super().setup(config)

        def step(self):
            session = get_session()
            if not session.training_started and session.loaded_checkpoint is None:
                self._adopt_unrecorded_checkpoint(session)
            return super().step()

        def _adopt_unrecorded_checkpoint(self, session) -> None:
            """A trial Tune starts without a checkpoint may have one its saved state never
            recorded (the driver stopped between the upload and the next save): continue
            from it, rather than retrain what it holds."""
            if self._storage is None:
                return
            newest = newest_complete_checkpoint(
                self._storage.storage_filesystem, self._storage.trial_fs_path, required_file
            )
            if newest is None:
                return
            index, path = newest
            print(f"resuming from {path}, which Tune's saved state did not record", file=sys.stderr)
            self._storage.current_checkpoint_index = max(
                self._storage.current_checkpoint_index, index
            )
            session.loaded_checkpoint = tune.Checkpoint(
                path, filesystem=self._storage.storage_filesystem
            )

        def restore(self, checkpoint_path):
            if isinstance(checkpoint_path, _TrainingResult):
                checkpoint_path = self._newest(checkpoint_path)
                if checkpoint_path is None:
                    return None
            return super().restore(checkpoint_path)

        def _newest(self, named):
            """The trial's newest complete checkpoint (named or later), as a _TrainingResult;
            None when it has none. Later checkpoints are numbered on from it, so none of the
            trial's checkpoints is ever written over."""
            checkpoint = named.checkpoint
            trial_dir = checkpoint.path.rstrip("/").rsplit("/", 1)[0]
            newest = newest_complete_checkpoint(checkpoint.filesystem, trial_dir, required_file)
            if newest is None:
                print(
                    f"checkpoint {checkpoint.path} is gone or incomplete and the trial has no "
                    "other: it starts afresh",
                    file=sys.stderr,
                )
                return None
            index, path = newest
            if path.rstrip("/") == checkpoint.path.rstrip("/"):
                return named
            print(f"resuming from {path}, not {checkpoint.path}", file=sys.stderr)
            if self._storage is not None:
                self._storage.current_checkpoint_index = max(
                    self._storage.current_checkpoint_index, index
                )
            return _TrainingResult(
                checkpoint=tune.Checkpoint(path, filesystem=checkpoint.filesystem),
                metrics=named.metrics,
            )

    Resumable.__name__ = base.__name__  # Tune names trials and logs by the trainable's name
    return Resumable
