"""Where a trial's checkpoints live and which of them are evaluations (issue 12).

A trial checkpoints at every evaluation (Tune's `checkpoint_<n>` folders in the trial's folder
of the results storage, local or S3) and, between evaluations, on time or SIGTERM
(orchestration/preemption.py). Its MLflow run is tagged `trm.checkpoint_dir` with that folder's
URI, so `orchestration.rescore` can score every evaluation's weights again, under other
protocols, without retraining. An evaluation's checkpoint is the one whose state carries the
evaluation's `report`; the others exist only to resume.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from orchestration.resume import CHECKPOINT_DIR

CHECKPOINT_DIR_TAG = "trm.checkpoint_dir"


def trial_storage_uri() -> str:
    """The URI of this trial's folder in Tune's storage (inside a running trial)."""
    from ray.train._internal.session import get_session

    storage = get_session().storage
    path = storage.trial_fs_path.rstrip("/")
    return f"s3://{path}" if storage.storage_filesystem.type_name == "s3" else path


def bound_trial_storage(keep: int, filename: str) -> list[str]:
    """`slim_older_evaluations` on this trial's folder (inside a running trial)."""
    from ray.train._internal.session import get_session

    storage = get_session().storage
    return slim_older_evaluations(storage.storage_filesystem, storage.trial_fs_path, keep, filename)


def filesystem_for(uri: str):
    """(pyarrow filesystem, path) of a local folder or an s3:// URI (configured as the dataset
    store's: endpoint and retries from the AWS variables)."""
    from pyarrow import fs

    if uri.startswith("s3://"):
        from datasets.store import s3_filesystem

        return s3_filesystem(), uri[len("s3://") :]
    return fs.LocalFileSystem(), uri


def load_state(filesystem, path: str) -> dict[str, Any]:
    with filesystem.open_input_stream(path) as stream:
        return torch.load(io.BytesIO(stream.read()), weights_only=False, map_location="cpu")


def evaluation_checkpoints(uri: str, filename: str) -> list[tuple[int, str]]:
    """(training step, path of `filename`) of every evaluation checkpoint in the trial folder at
    `uri`, by step; where two folders hold one step (a resumed trial's), the later one."""
    from pyarrow import fs

    filesystem, root = filesystem_for(uri)
    entries = filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True))
    folders = sorted(
        (int(match.group(1)), entry.path)
        for entry in entries
        if entry.type == fs.FileType.Directory and (match := CHECKPOINT_DIR.match(entry.base_name))
    )
    by_step: dict[int, str] = {}
    for _, folder in folders:
        path = f"{folder}/{filename}"
        if filesystem.get_file_info(path).type != fs.FileType.File:
            continue  # a partly written folder: never published whole
        state = load_state(filesystem, path)
        if state.get("report") is not None:
            by_step[int(state["trainer"]["step"])] = path
    return sorted(by_step.items())


SLIM_MARKER = "weights_only"  # in a folder whose state was slimmed to its weights


def slim_older_evaluations(filesystem, trial_dir: str, keep: int, filename: str) -> list[str]:
    """Bound a trial's disk use: all but the newest `keep` checkpoint folders keep only what
    re-scoring needs (`trm_core.trainer.weights_only`: configs, step, weights, EMA), published
    whole over the old file; a between-evaluation checkpoint older than those is removed (a
    newer one supersedes it for resuming, and it holds no evaluation). The newest is always
    full, so a resume (orchestration/resume.py: the newest complete checkpoint) is unaffected.
    Returns the folders changed."""
    from pyarrow import fs

    from trm_core.trainer import weights_only

    entries = filesystem.get_file_info(fs.FileSelector(trial_dir, allow_not_found=True))
    folders = sorted(
        (int(match.group(1)), entry.path)
        for entry in entries
        if entry.type == fs.FileType.Directory and (match := CHECKPOINT_DIR.match(entry.base_name))
    )
    complete = [
        path
        for _, path in folders
        if filesystem.get_file_info(f"{path}/{filename}").type == fs.FileType.File
    ]
    changed = []
    for folder in complete[: max(0, len(complete) - keep)]:
        if filesystem.get_file_info(f"{folder}/{SLIM_MARKER}").type == fs.FileType.File:
            continue
        state = load_state(filesystem, f"{folder}/{filename}")
        if state.get("report") is None:
            filesystem.delete_dir(folder)
            changed.append(folder)
            continue
        slim = {**state, "trainer": weights_only(state["trainer"])}
        slim.pop("loader", None)
        buffer = io.BytesIO()
        torch.save(slim, buffer)
        partial = f"{folder}/.{filename}.partial"
        with filesystem.open_output_stream(partial) as out:
            out.write(buffer.getbuffer())
        filesystem.move(partial, f"{folder}/{filename}")
        with filesystem.open_output_stream(f"{folder}/{SLIM_MARKER}") as out:
            out.write(b"model and EMA weights only: re-scorable, not resumable\n")
        changed.append(folder)
    return changed
