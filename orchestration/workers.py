"""A trial trained by a group of data-parallel workers: a Ray Train `TorchTrainer` inside the
trial's Tune actor (issue 13, part 5; the paper trains ARC on 4 GPUs per run, TRM_SPEC §2.1).

    python -m orchestration.ablate suite=main scale=paper scale.workers_per_trial=4

With `scale.workers_per_trial` > 1 the Tune trial (orchestration/trial.py: its MLflow run, its
retries, its folder in Tune's storage) starts a worker group of that size, each worker with
`cpus_per_trial` CPUs and `gpus_per_trial` GPUs (per worker), joined in one torch.distributed
group (NCCL on GPUs, gloo on CPUs). Every rank trains its rows of the global batch
(trm_core/distributed.py: the one-process maths at the same global batch, the sparse puzzle
embedding gradients gathered as the official code). Rank 0 logs to the trial's MLflow run and
writes each checkpoint into the trial's folder exactly as a one-worker trial's (checkpoint_<n>/
state.pt, published whole), so resume (orchestration/resume.py: the newest complete
checkpoint), retention and `orchestration.rescore` do not know the difference; a checkpoint
holds the global carry and resumes on any number of workers that divides the batch. The ranks
split the test split's batches and each folds all of them in order (trm_core.Trainer.evaluate),
so every rank has the one-process metrics, N times faster; rank 0's reach MLflow, and Tune
through Ray Train's report.

SIGTERM to a worker (a pod deletion, a spot reclaim) checkpoints the step in flight and stops
the group (`CheckpointOnSigterm`), and Tune retries the trial from there, as a one-worker trial.
A worker lost (its node, a kill) fails the group; the Tune trial fails with it and Tune
retries it from the newest checkpoint, as a one-worker trial. The trial's own actor only waits
on the group, so it reserves no CPU; the group waits up to WORKER_GROUP_WAIT_S for its
resources (Ray Train's default, 60 s, would fail trials queued behind others).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ray.train.v2._internal.execution.callback import WorkerGroupCallback

from orchestration.checkpoints import (
    filesystem_for,
    load_state,
    slim_older_evaluations,
    trial_storage_uri,
)
from orchestration.preemption import publish_checkpoint, stop_on_sigterm, training
from orchestration.resume import newest_complete_checkpoint
from orchestration.tracking import Tracker
from orchestration.trial import CHECKPOINT_FILE, kill_this_process, train_trial
from orchestration.trial_spec import TrialSpec

WORKER_GROUP_WAIT_S = 3600
GROUP_FOLDER = "worker_group"  # Ray Train's own run files, inside the trial's folder


def trial_resources():
    """What the Tune trial itself reserves: a byte of memory (a request must name something,
    and CPUs it would hold idle); Ray Train reserves its workers."""
    from ray import tune

    return tune.PlacementGroupFactory([{"CPU": 0, "memory": 1}])


def train_on_workers(spec: TrialSpec, run_id: str, first_attempt: bool) -> None:
    """From the Tune trial: train the trial on a worker group, from its newest checkpoint."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2._internal.constants import WORKER_GROUP_START_TIMEOUT_S_ENV_VAR
    from ray.tune.integration.ray_train import TuneReportCallback

    os.environ.setdefault(WORKER_GROUP_START_TIMEOUT_S_ENV_VAR, str(WORKER_GROUP_WAIT_S))
    uri = trial_storage_uri()
    filesystem, root = filesystem_for(uri)
    newest = newest_complete_checkpoint(filesystem, root, CHECKPOINT_FILE)
    if newest is not None:
        print(f"worker group resumes from {newest[1]}", file=sys.stderr)
    use_gpu = spec.gpus_per_worker > 0
    group = TorchTrainer(
        _worker,
        train_loop_config={
            "spec": spec.to_dict(),
            "run_id": run_id,
            "trial_uri": uri,
            "resume_from": None if newest is None else newest[1],
            "next_index": 0 if newest is None else newest[0] + 1,
            "first_attempt": first_attempt,
        },
        scaling_config=ScalingConfig(
            num_workers=spec.workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": spec.threads, "GPU": spec.gpus_per_worker},
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=GROUP_FOLDER,
            storage_path=root,
            storage_filesystem=filesystem,
            callbacks=[TuneReportCallback(), CheckpointOnSigterm()],
            # a lost worker fails the trial; Tune retries it (scale.max_failures)
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    # SIGTERM to this trial's actor while its group trains (a pod deletion sends it to every
    # process) must not end it before the ranks, which checkpoint on their own SIGTERM, are
    # done: the group then fails with `Preempted` and Tune retries the trial from there.
    with training():
        group.fit()


class CheckpointOnSigterm(WorkerGroupCallback):
    """Installs the SIGTERM handler of orchestration/preemption.py on every rank's main thread
    (Ray Train runs the training loop in another thread, where no handler can be set), before
    the training starts: SIGTERM to a rank then checkpoints the step in flight on every rank
    (they agree each step) and the group stops, as a one-worker trial does."""

    def after_worker_group_start(self, worker_group) -> None:
        for rank, error in enumerate(worker_group.execute(_install_sigterm_handler)):
            if error:
                print(f"rank {rank}: SIGTERM will not checkpoint: {error}", file=sys.stderr)


def _install_sigterm_handler() -> str | None:
    try:
        stop_on_sigterm()
    except ValueError as err:  # not on the main thread
        return str(err)
    return None


class WorkerGroupPublisher:
    """EvaluationReports' publisher on a rank of the group: rank 0 writes each checkpoint as
    the trial's next folder; every rank reports the evaluation to Ray Train (which passes rank
    0's to Tune)."""

    def __init__(self, rank: int, trial_uri: str, next_index: int, full_checkpoints: int | None):
        self.rank, self.trial_uri = rank, trial_uri
        self.filesystem, self.root = filesystem_for(trial_uri)
        self.next_index, self.full_checkpoints = next_index, full_checkpoints

    def evaluation(self, report: dict[str, float], state: dict[str, Any]) -> None:
        import ray.train

        if self.rank == 0:
            self._publish(state)
            if self.full_checkpoints:
                keep = self.full_checkpoints
                slim_older_evaluations(self.filesystem, self.root, keep, CHECKPOINT_FILE)
        ray.train.report(report)

    def between(self, state: dict[str, Any]) -> str:
        return self._publish(state) if self.rank == 0 else ""

    def _publish(self, state: dict[str, Any]) -> str:
        folder = f"{self.root}/checkpoint_{self.next_index:06d}"
        self.next_index += 1
        return publish_checkpoint(self.filesystem, folder, state, CHECKPOINT_FILE)


def _worker(config: dict[str, Any]) -> None:
    """One rank of the group (Ray Train's train_loop_per_worker)."""
    import ray.train
    import ray.train.torch
    import torch

    from trm_core import Trainer
    from trm_core.distributed import Shard, any_rank

    spec = TrialSpec.from_dict(config["spec"])
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(spec.threads)
    device = ray.train.torch.get_device() if spec.gpus_per_worker > 0 else torch.device("cpu")
    if device.type == "cuda":  # NCCL's object collectives (the evaluation's) use the current GPU
        torch.cuda.set_device(device)
    trainer = Trainer(spec.model, spec.train, device, shard=Shard.of_process_group())
    state = None
    if config["resume_from"] is not None:
        filesystem, _ = filesystem_for(config["trial_uri"])
        state = load_state(filesystem, f"{config['resume_from']}/{CHECKPOINT_FILE}")
    publisher = WorkerGroupPublisher(
        rank, config["trial_uri"], config["next_index"], spec.full_checkpoints
    )
    after_log = None
    if spec.inject_failure == "killed_after_log" and config["first_attempt"] and rank == 0:
        after_log = kill_this_process
    progress = {"step": 0}
    train_trial(
        spec,
        trainer,
        Tracker(spec.tracking.uri),
        config["run_id"],
        state,
        progress,
        publisher,
        after_log,
        agree=lambda flags: any_rank(flags, trainer.device),
    )
