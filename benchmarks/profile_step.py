"""Where a training step's time goes: torch.profiler over `Trainer.train_step`, self CPU time per
operator, split into forward (model, loss, carry, EMA), backward and optimiser.

    python benchmarks/profile_step.py --preset trm_mlp --batch 32 --dtype float32 --threads 2
    PYTHONPATH=/path/to/other/checkout python benchmarks/profile_step.py ...   # another trm_core

An operator counts as backward when it runs under an autograd engine node, as optimiser under
`Optimizer.step`. Self time excludes children, so the columns add up to the step. Profiling
costs a few percent; compare shares, not absolute times, with `train_step.py`.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from train_step import build_trainer, random_batches  # the script's folder is on sys.path

PHASES = ("forward", "backward", "optimizer")


def phase_of(event) -> str:
    node = event
    while node is not None:
        if node.name.startswith("autograd::engine::evaluate_function"):
            return "backward"
        if node.name.startswith("Optimizer.step"):
            return "optimizer"
        node = node.cpu_parent
    return "forward"


def breakdown(events) -> dict[str, collections.Counter]:
    """Self CPU µs per (phase, operator); wrapper events (autograd nodes, the optimiser's own
    record) keep only their self time, which is the Python or engine overhead around ops."""
    out = {phase: collections.Counter() for phase in PHASES}
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue
        name = event.name
        if name.startswith("autograd::engine::evaluate_function: "):
            name = "engine: " + name.split(": ", 1)[1]
        out[phase_of(event)][name] += event.self_cpu_time_total
    return out


def matmul_shapes(events) -> collections.Counter:
    """Self CPU µs of the matrix products per (phase, op, input shapes)."""
    out = collections.Counter()
    for event in events:
        if event.name in ("aten::mm", "aten::bmm", "aten::addmm", "aten::_weight_int8pack_mm"):
            out[(phase_of(event), event.name, str(event.input_shapes[:2]))] += (
                event.self_cpu_time_total
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="trm_mlp")
    parser.add_argument("--task", default="sudoku")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--compile", default="off", choices=["on", "off"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--shapes", action="store_true", help="also list matmuls by shape")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trainer, _ = build_trainer(
        args.preset, args.task, args.batch, "cpu", args.dtype, args.compile, args.set
    )
    batches = random_batches(trainer.model_config, args.batch, args.steps + 1)
    trainer.train_step(batches[0])  # warm-up (allocator, oneDNN primitive caches)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        for batch in batches[1:]:
            trainer.train_step(batch)
    phases = breakdown(prof.events())
    total = sum(sum(c.values()) for c in phases.values())
    import trm_core

    print(
        f"{args.preset} batch {args.batch} {trainer.dtype} compile {args.compile}, "
        f"{args.threads} threads, trm_core from {Path(trm_core.__file__).parent}"
    )
    print(f"profiled {total / 1e6 / args.steps:.2f} s/step (self CPU time, all threads)")
    for phase in PHASES:
        counter = phases[phase]
        share = sum(counter.values())
        print(f"\n{phase}: {share / 1e6 / args.steps:.2f} s/step ({share / total:.0%})")
        for name, us in counter.most_common(args.top):
            print(f"  {us / total:6.1%}  {us / 1e6 / args.steps:7.3f} s  {name}")
    if args.shapes:
        print("\nmatrix products by shape:")
        for (phase, name, shapes), us in matmul_shapes(prof.events()).most_common(args.top):
            print(f"  {us / total:6.1%}  {us / 1e6 / args.steps:7.3f} s  {phase} {name} {shapes}")


if __name__ == "__main__":
    main()
