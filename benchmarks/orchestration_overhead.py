"""Orchestration overhead: wall time of a suite through `orchestration.ablate` (Ray Tune, MLflow,
checkpoints at every evaluation) against the same trials run directly through trm_core, with
the same concurrency, in plain processes.

    python benchmarks/orchestration_overhead.py [--suite smoke] [--scale mini] [--seeds 1]
    python benchmarks/orchestration_overhead.py --suite paper --scale mini --seeds 2   # make demo

Both runs start from a built dataset (the build is done first, untimed). Prints the two wall
times and their ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def direct_trial(spec) -> float:
    """The trial's training and evaluation, without Ray or MLflow; returns exact accuracy."""
    import torch

    from datasets.loader import TrainBatches, eval_batches
    from orchestration.tasks import open_trial_data, trial_trainer  # no Ray in the timed path

    torch.set_num_threads(spec.threads)
    manifest, task, train, test = open_trial_data(spec.dataset)
    trainer = trial_trainer(spec)
    budget = spec.budget
    metrics = trainer.fit(
        TrainBatches(train, trainer.train_config.global_batch_size, seed=spec.seed),
        budget.steps,
        eval_batches=lambda: eval_batches(test, budget.eval_batch_size),
        eval_every=budget.eval_every,
        hooks=lambda: task.eval_hooks(manifest),
    )
    return metrics["exact_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--scale", default="mini")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    overrides = [f"suite={args.suite}", f"scale={args.scale}", f"seeds={args.seeds}"]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        from hydra import compose, initialize_config_module
        from omegaconf import OmegaConf

        import orchestration.ablate as ablate

        with initialize_config_module(config_module="orchestration.conf", version_base=None):
            cfg = OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
        planned = ablate.plan(cfg, base)  # builds the dataset, untimed
        specs = planned["specs"]

        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "orchestration.ablate", *overrides],
            cwd=base,
            capture_output=True,
            text=True,
        )
        through_ablate = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"ablate failed:\n{result.stderr[-3000:]}")

        started = time.perf_counter()
        concurrency = planned["scale"]["max_concurrent_trials"] or len(specs)
        with multiprocessing.get_context("spawn").Pool(concurrency) as pool:
            accuracies = pool.map(direct_trial, specs, chunksize=1)  # longest first, as ablate
        direct = time.perf_counter() - started

    print(f"suite {args.suite}, scale {args.scale}: {len(specs)} trials, {concurrency} at a time")
    print(f"  through ablate (Ray Tune + MLflow + checkpoints): {through_ablate:7.1f} s")
    print(f"  directly through trm_core:                       {direct:7.1f} s")
    print(f"  ratio:                                           {through_ablate / direct:7.2f}")
    print(f"  direct exact accuracies: {[round(a, 3) for a in accuracies]}")


if __name__ == "__main__":
    main()
