"""Cost of every arm of a suite at a scale, measured: seconds per training step, peak memory,
predicted trial time, and the suite's predicted wall time on this machine.

    python benchmarks/suite_cost.py suite=paper scale=mini
    python benchmarks/suite_cost.py suite=paper scale=paper device=cuda --steps 5

Arms are resolved exactly as `orchestration.ablate` resolves them (same Hydra config, same
dataset), then each arm trains `--steps` steps on real batches in a fresh process (so its peak
memory is its own) with the scale's threads. The suite prediction packs the arms' trials
(longest first) onto `max_concurrent_trials` slots. It prints figures; it asserts nothing.
Use it to size a scale's budget and its GPU share (peak memory per trial).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _measure_arm(spec, steps: int, warmup: int, queue) -> None:
    import torch

    from datasets.loader import TrainBatches
    from orchestration.tasks import open_trial_data, trial_trainer

    torch.set_num_threads(spec.threads)
    _, _, train_split, _ = open_trial_data(spec.dataset)
    trainer = trial_trainer(spec)
    loader = TrainBatches(train_split, trainer.train_config.global_batch_size, seed=0)
    batches = iter(loader)
    for _ in range(warmup):
        trainer.train_step(next(batches))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
        torch.cuda.reset_peak_memory_stats(trainer.device)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
        peak = torch.cuda.max_memory_allocated(trainer.device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    queue.put(
        {
            "seconds_per_step": (time.perf_counter() - started) / steps,
            "peak_gib": peak,
            "params": trainer.num_parameters,
            "device": str(trainer.device),
        }
    )


def pack(durations: list[float], slots: int) -> float:
    """Makespan of trials placed longest first on the least-loaded slot."""
    loads = [0.0] * max(1, slots)
    for duration in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += duration
    return max(loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="ablate overrides: suite=… scale=… …")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from orchestration import ablate

    with initialize_config_dir(str(ROOT / "orchestration" / "conf"), version_base=None):
        cfg = compose("config", overrides=args.overrides)
    values = OmegaConf.to_container(cfg, resolve=True)
    planned = ablate.plan(values, ROOT)
    scale, suite = planned["scale"], planned["suite"]
    context = multiprocessing.get_context("spawn")
    print(
        f"suite {suite.name} at scale {scale['name']}: batch "
        f"{planned['specs'][0].train.global_batch_size}, {scale['cpus_per_trial']} "
        f"thread(s) per trial, {scale['max_concurrent_trials'] or 'all'} at once"
    )
    print(f"{'arm':<16}{'params':>10}{'steps':>9}{'s/step':>9}{'trial s':>9}{'peak GiB':>10}")
    trial_seconds = []
    for spec in [s for s in planned["specs"] if s.seed == 0]:
        queue = context.Queue()
        worker = context.Process(target=_measure_arm, args=(spec, args.steps, args.warmup, queue))
        worker.start()
        result = queue.get()
        worker.join()
        budget = spec.budget
        evals = budget.steps // budget.eval_every
        # evaluation is forward-only over the test split: roughly a few training steps each
        seconds = result["seconds_per_step"] * (budget.steps + 3 * evals)
        trial_seconds.append(seconds)
        print(
            f"{spec.arm:<16}{result['params']:>10,}{budget.steps:>9}"
            f"{result['seconds_per_step']:>9.3f}"
            f"{seconds:>9.0f}{result['peak_gib']:>10.2f}"
        )
    seeds = len(planned["specs"]) // len(trial_seconds)
    slots = scale["max_concurrent_trials"] or len(trial_seconds) * seeds
    wall = pack(trial_seconds * seeds, slots)
    print(
        f"predicted suite wall time with {seeds} seed(s): {wall / 60:.1f} min "
        f"(training only; add Ray start-up and data build)"
    )


if __name__ == "__main__":
    main()
