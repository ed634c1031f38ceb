"""A trial's restore that always makes progress (issue 15).

Tune restores a trial from the checkpoint its saved experiment state names. That state is
written every few seconds, so it can name a checkpoint that is gone by the time of a rerun (an
older retention setting deleted it, a store lost it): Tune then fails the trial at every retry,
for good, while newer checkpoints of the same trial sit beside it. `resumable(run_trial)`
wraps the trial function as a Tune trainable whose restore falls back to the newest complete
checkpoint of that trial's folder (one holding CHECKPOINT_FILE), or to a fresh start when there
is none, and says which on stderr. A newer checkpoint than the one named is the trial's own
later progress; metrics of steps already logged are not logged again (trial.py).

Uses Ray Tune internals (`_TrainingResult`, `_exists_at_fs_path`) of the pinned Ray version;
tests/orchestration/test_ablate.py covers it end to end.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")


def newest_complete_checkpoint(filesystem, trial_dir: str, required_file: str) -> str | None:
    """The path of the highest-numbered checkpoint folder in `trial_dir` holding
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
    for _, path in candidates:
        info = filesystem.get_file_info(f"{path}/{required_file}")
        if info.type == fs.FileType.File:
            return path
    return None


def resumable(train_function: Callable, required_file: str):
    """`train_function` as a Tune trainable class whose restore falls back (module docstring)."""
    from ray import tune
    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.train._internal.storage import _exists_at_fs_path
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(train_function)

    class Resumable(base):
        def restore(self, checkpoint_path):
            if isinstance(checkpoint_path, _TrainingResult):
                checkpoint = checkpoint_path.checkpoint
                if not _exists_at_fs_path(checkpoint.filesystem, checkpoint.path):
                    trial_dir = checkpoint.path.rstrip("/").rsplit("/", 1)[0]
                    newest = newest_complete_checkpoint(
                        checkpoint.filesystem, trial_dir, required_file
                    )
                    if newest is None:
                        print(
                            f"checkpoint {checkpoint.path} is gone and the trial has no other: "
                            "it starts afresh",
                            file=sys.stderr,
                        )
                        return None
                    print(
                        f"checkpoint {checkpoint.path} is gone: resuming from {newest}",
                        file=sys.stderr,
                    )
                    checkpoint_path = _TrainingResult(
                        checkpoint=tune.Checkpoint(newest, filesystem=checkpoint.filesystem),
                        metrics=checkpoint_path.metrics,
                    )
            return super().restore(checkpoint_path)

    Resumable.__name__ = base.__name__  # Tune names trials and logs by the trainable's name
    return Resumable
