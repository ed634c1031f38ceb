"""Training throughput of one model preset: examples/s, supervision (= optimizer) steps/s, model
FLOPs per example (TRM_SPEC §7 convention) and, on CUDA, MFU against the device's bf16 peak.

    python benchmarks/train_step.py --preset trm_mlp --task sudoku --batch 64 --device cpu
    python benchmarks/train_step.py --preset trm_att --task arc --batch 768 --device cuda

Random tokens stand in for data (compute does not depend on content). Timing starts after
`--warmup` steps (compilation and allocator warm-up) and synchronises the device. It prints
figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from trm_core import ModelConfig, TrainConfig, Trainer
from trm_core.flops import supervision_step_flops

TASK_SHAPES = {  # vocab, tokens, puzzle ids (TRM_SPEC §3)
    "sudoku": dict(vocab_size=11, seq_len=81, num_puzzle_ids=1),
    "maze": dict(vocab_size=6, seq_len=900, num_puzzle_ids=1),
    "arc": dict(vocab_size=12, seq_len=900, num_puzzle_ids=1000),
}

# Dense bf16 tensor-core peaks (vendor datasheets, without sparsity), matched on device name.
BF16_PEAK_TFLOPS = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 PCIe": 756.0,
    "H100": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "A10G": 70.0,
    "RTX 4090": 165.2,
}


def device_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in BF16_PEAK_TFLOPS.items():
        if key in name:
            return peak
    return None


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="trm_mlp")
    parser.add_argument("--task", default="sudoku", choices=sorted(TASK_SHAPES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak to compute MFU against (default: known CUDA devices)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="model overrides, e.g. --set hidden=128 T=2",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model_cfg = ModelConfig.from_preset(
        args.preset, **{**TASK_SHAPES[args.task], **parse_overrides(args.set)}
    )
    trainer = Trainer(
        model_cfg,
        TrainConfig(
            global_batch_size=args.batch, dtype=args.dtype, compile=args.compile, lr_warmup_steps=0
        ),
        device=args.device,
    )
    device = trainer.device
    generator = torch.Generator().manual_seed(0)

    def batch() -> dict[str, torch.Tensor]:
        shape = (args.batch, model_cfg.seq_len)
        return {
            "inputs": torch.randint(1, model_cfg.vocab_size, shape, generator=generator),
            "labels": torch.randint(1, model_cfg.vocab_size, shape, generator=generator),
            "puzzle_ids": torch.randint(
                0, model_cfg.num_puzzle_ids, (args.batch,), generator=generator
            ),
        }

    batches = [batch() for _ in range(min(args.steps + args.warmup, 8))]
    for i in range(args.warmup):
        trainer.train_step(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for i in range(args.steps):
        trainer.train_step(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started

    steps_per_s = args.steps / elapsed
    flops_per_example = supervision_step_flops(model_cfg, training=True)
    achieved = flops_per_example * args.batch * steps_per_s
    peak = args.peak_tflops or device_peak_tflops(device)
    if device.type == "cuda":
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB peak allocated"
        name = torch.cuda.get_device_name(device)
    else:
        memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB max RSS"
        name = f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"preset {args.preset} task {args.task} batch {args.batch} on {name}, "
        f"dtype {trainer.dtype}, compile {args.compile}"
    )
    print(f"  parameters            {trainer.num_parameters:,}")
    print(f"  depth / NFP           {model_cfg.depth} / {model_cfg.forward_passes_per_step}")
    print(f"  GFLOPs/example/step   {flops_per_example / 1e9:.2f} (train, fwd+bwd)")
    print(f"  step time             {elapsed / args.steps * 1e3:.1f} ms ({args.steps} timed)")
    print(f"  supervision steps/s   {steps_per_s:.3f}")
    print(f"  examples/s            {args.batch * steps_per_s:.1f}")
    print(f"  achieved TFLOP/s      {achieved / 1e12:.3f}")
    if peak:
        print(f"  MFU                   {achieved / (peak * 1e12):.1%} of {peak} TFLOP/s bf16")
    print(f"  memory                {memory}")


if __name__ == "__main__":
    main()
