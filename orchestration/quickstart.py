"""Quick start: train a small TRM on 4×4 Sudoku on the CPU and print its held-out accuracy.

    python -m orchestration.quickstart [--steps 800] [--seed 0] [--threads 2]

About a minute on 2 CPU cores. Test puzzles have solution grids never seen in training.
"""

from __future__ import annotations

import argparse
import time

import torch

from datasets import tiny_sudoku
from datasets.loader import TrainBatches, eval_batches
from trm_core import GroupedExactAccuracy, ModelConfig, TrainConfig, Trainer, TrainerCallback

# A scaled-down TRM-MLP: same recursion and training recipe, tiny width and budget.
MODEL = ModelConfig.from_preset(
    "trm_mlp",
    vocab_size=tiny_sudoku.VOCAB_SIZE,
    seq_len=tiny_sudoku.CELLS,
    hidden=64,
    heads=4,
    expansion=2,
    swiglu_multiple=16,
    T=2,
    n=2,
    halt_max_steps=4,
    puzzle_emb_len=4,
)
TRAIN = dict(
    global_batch_size=64,
    lr=1e-3,
    lr_warmup_steps=50,
    weight_decay=0.1,
    puzzle_emb_lr=1e-2,
    puzzle_emb_weight_decay=0.1,
    ema=True,
    ema_rate=0.99,
)


class PrintProgress(TrainerCallback):
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        levels = "  ".join(
            f"{k.split('=')[1]} givens {v:.1%}"
            for k, v in metrics.items()
            if k.startswith("exact_accuracy/givens=")
        )
        print(
            f"step {trainer.step:5d}  {time.perf_counter() - self.started:6.1f}s  "
            f"exact {metrics['exact_accuracy']:.1%}  token {metrics['token_accuracy']:.1%}  "
            f"halt step {metrics['halt_step']:.2f}  [{levels}]",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, test = tiny_sudoku.build(train_size=6000, test_size=500, seed=args.seed)
    trainer = Trainer(MODEL, TrainConfig(seed=args.seed, **TRAIN), device="cpu")
    print(
        f"TRM-MLP (hidden {MODEL.hidden}, T={MODEL.T}, n={MODEL.n}, N_sup="
        f"{MODEL.halt_max_steps}), {trainer.num_parameters:,} parameters; 4×4 Sudoku, "
        f"{train.num_examples} train / {test.num_examples} test puzzles"
    )
    metrics = trainer.fit(
        TrainBatches(train, TRAIN["global_batch_size"], seed=args.seed),
        args.steps,
        eval_batches=lambda: eval_batches(test, 250),
        eval_every=max(1, args.steps // 4),
        hooks=lambda: [GroupedExactAccuracy("givens")],
        callbacks=[PrintProgress()],
    )
    print(f"held-out exact accuracy: {metrics['exact_accuracy']:.1%}")


if __name__ == "__main__":
    main()
