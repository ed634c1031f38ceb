"""GPU shares per trial, fixed or sized from each arm's measured peak memory.

`scale.gpus_per_trial` is a whole number, a share that divides 1 (0.5, 0.25, 0.125: Ray packs
fractional GPUs only when shares add up to whole devices), or `auto`: before the suite starts,
one probe task per arm (on a GPU of the cluster) trains two steps and evaluates one batch at the
arm's real batch sizes, and the arm gets the smallest share whose slice of the device holds its
peak reserved memory with headroom. Small arms then share a GPU; large ones get a whole device.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestration.trial_spec import TrialSpec

ALLOWED_GPU_FRACTIONS = (0.125, 0.25, 0.5)  # shares of one GPU must divide 1 (ray#5902)
SHARES = (*ALLOWED_GPU_FRACTIONS, 1.0)
HEADROOM = 1.3  # allocator fragmentation, the CUDA context and evaluation at other shapes


def check_gpus_per_trial(value: Any) -> None:
    """Raise ValueError unless `value` is 0/None, a whole number, an allowed share or auto."""
    if value in (None, 0, "auto"):
        return
    if isinstance(value, (int, float)) and (
        (value >= 1 and float(value).is_integer()) or value in ALLOWED_GPU_FRACTIONS
    ):
        return
    raise ValueError(
        f"scale.gpus_per_trial={value} must be a whole number or one of "
        f"{list(ALLOWED_GPU_FRACTIONS)} (shares of a GPU must divide 1), or auto"
    )


def share_for(peak_bytes: int, device_bytes: int, headroom: float = HEADROOM) -> float:
    """The smallest allowed share of a device of `device_bytes` that holds `peak_bytes`."""
    for share in SHARES:
        if peak_bytes * headroom <= share * device_bytes:
            return share
    raise ValueError(
        f"a trial needs {peak_bytes / 2**30:.1f} GiB (x{headroom} headroom) but a GPU has "
        f"{device_bytes / 2**30:.1f} GiB; lower the batch size or use a larger device"
    )


def probe_peak_memory(spec: TrialSpec) -> tuple[int, int]:
    """(peak reserved bytes, device bytes) of two training steps and one evaluation batch of
    the trial `spec` on this process's GPU. Runs inside a Ray task with one GPU."""
    import torch

    from datasets.loader import TrainBatches, eval_batches
    from orchestration.tasks import open_trial_data, trial_trainer

    if not torch.cuda.is_available():
        raise RuntimeError("gpus_per_trial=auto needs a CUDA device in the probe task")
    device = torch.device("cuda")
    _, _, train, test = open_trial_data(spec.dataset)
    if spec.workers > 1:  # a worker holds its rows of the batch: a one-process run of those
        rows = spec.train.global_batch_size // spec.workers
        spec = dataclasses.replace(
            spec, workers=1, train=spec.train.replace(global_batch_size=rows)
        )
    trainer = trial_trainer(spec, device)
    torch.cuda.reset_peak_memory_stats(device)
    batches = iter(TrainBatches(train, trainer.train_config.global_batch_size, seed=0))
    for _ in range(2):
        trainer.train_step(next(batches))
    trainer.evaluate([next(iter(eval_batches(test, spec.budget.eval_batch_size)))], hooks=())
    torch.cuda.synchronize(device)
    return (
        int(torch.cuda.max_memory_reserved(device)),
        int(torch.cuda.get_device_properties(device).total_memory),
    )


def auto_gpu_shares(specs: list[TrialSpec], cpus: float) -> dict[str, float]:
    """Arm → GPU share (per worker of a worker group), from one probe per arm on the
    cluster's GPUs (seed 0's spec)."""
    import ray

    probe = ray.remote(num_gpus=1, num_cpus=cpus)(probe_peak_memory)
    arms = {spec.arm: spec for spec in specs if spec.seed == 0}
    results = ray.get([probe.remote(spec) for spec in arms.values()])
    return {arm: share_for(peak, device) for arm, (peak, device) in zip(arms, results, strict=True)}
