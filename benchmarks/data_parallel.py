"""Data-parallel scaling of the training step (trm_core/distributed.py): one global batch on 1,
2, ... ranks — gloo on CPU, NCCL on CUDA (one GPU per rank) — without Ray, so the figures are
the maths and the collectives alone (a worker group's start-up is not in them).

    python benchmarks/data_parallel.py --preset trm_mlp --task sudoku6 --batch 64 \\
        --workers 1 2 --device cpu --threads 2 --set hidden=64 T=2 n=2 halt_max_steps=4
    python benchmarks/data_parallel.py --preset trm_att --task arc --batch 768 \\
        --workers 1 2 4 --device cuda --dtype bfloat16

On CPU `--threads` is the machine's total, shared out: 1 rank × 2 threads against 2 ranks × 1
thread on 2 cores. Each configuration runs in fresh processes; timing starts after `--warmup`
steps and every rank is synchronised (a barrier, and the device) before and after. Prints
s/step, examples/s, speed-up and efficiency against 1 rank, and MFU per GPU on CUDA. It prints
figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_step import (  # the script's folder is on sys.path
    TASK_SHAPES,
    device_peak_tflops,
    parse_overrides,
    random_batches,
)

from trm_core import ModelConfig, TrainConfig, Trainer
from trm_core.distributed import Shard
from trm_core.flops import supervision_step_flops


def _rank(rank: int, world: int, init: str, args: argparse.Namespace, out: str) -> None:
    if args.device == "cpu":
        torch.set_num_threads(max(1, args.threads // world))
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    if world > 1:
        backend = "gloo" if device.type == "cpu" else "nccl"
        dist.init_process_group(backend, init_method=init, rank=rank, world_size=world)
    model_cfg = ModelConfig.from_preset(
        args.preset, **{**TASK_SHAPES[args.task], **parse_overrides(args.set)}
    )
    train_cfg = TrainConfig(
        global_batch_size=args.batch, dtype=args.dtype, compile=args.compile, lr_warmup_steps=0
    )
    trainer = Trainer(model_cfg, train_cfg, device, shard=Shard.of_process_group())
    batches = random_batches(model_cfg, args.batch, min(args.steps + args.warmup, 8))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if world > 1:
            dist.barrier()

    for i in range(args.warmup):
        trainer.train_step(batches[i % len(batches)])
    sync()
    started = time.perf_counter()
    for i in range(args.steps):
        trainer.train_step(batches[i % len(batches)])
    sync()
    elapsed = time.perf_counter() - started
    if rank == 0:
        Path(out).write_text(
            json.dumps(
                {
                    "step_s": elapsed / args.steps,
                    "flops_per_example": supervision_step_flops(model_cfg, training=True),
                    "dtype": str(trainer.dtype).removeprefix("torch."),
                    "peak": device_peak_tflops(device),
                    "threads": torch.get_num_threads() if device.type == "cpu" else None,
                }
            )
        )
    if world > 1:
        dist.barrier()  # no rank tears the group down while another still uses it
        dist.destroy_process_group()


def measure(world: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = f"{folder}/result.json"
        init = f"file://{folder}/rendezvous"
        mp.spawn(_rank, args=(world, init, args, out), nprocs=world)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="trm_mlp")
    parser.add_argument("--task", default="sudoku", choices=sorted(TASK_SHAPES))
    parser.add_argument("--batch", type=int, default=64, help="the global batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="CPU: total, shared by the ranks")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--compile", default="off")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="model field overrides, k=v")
    args = parser.parse_args()
    bad = [w for w in args.workers if w < 1 or args.batch % w]
    if bad:
        parser.error(f"--workers {bad}: each must be >= 1 and divide --batch {args.batch}")
    if args.device == "cuda" and max(args.workers) > torch.cuda.device_count():
        parser.error(f"--workers {max(args.workers)} needs as many GPUs; this machine has "
                     f"{torch.cuda.device_count()}")  # fmt: skip

    print(
        f"preset {args.preset} task {args.task}, global batch {args.batch}, {args.device}, "
        f"dtype {args.dtype}, compile {args.compile}, {args.steps} timed steps"
        + (f", {args.threads} threads in all" if args.device == "cpu" else "")
    )
    print(f"{'ranks':>5} {'s/step':>9} {'examples/s':>11} {'speed-up':>9} {'efficiency':>11}"
          f"{'  MFU/GPU' if args.device == 'cuda' else ''}")  # fmt: skip
    first: tuple[int, float] | None = None  # (ranks, s/step) of the first row
    for world in args.workers:
        result = measure(world, args)
        rate = args.batch / result["step_s"]
        first = first or (world, result["step_s"])
        speedup = first[1] / result["step_s"]
        line = (
            f"{world:>5} {result['step_s']:>9.3f} {rate:>11.1f} {speedup:>9.2f} "
            f"{speedup * first[0] / world:>11.0%}"
        )
        if result["peak"]:
            per_gpu = result["flops_per_example"] * rate / world / 1e12
            line += f"  {per_gpu / result['peak']:>7.1%}"
        print(line, flush=True)
    print("speed-up and efficiency: against the first row, at the same global batch")


if __name__ == "__main__":
    main()
