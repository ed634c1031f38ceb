"""Data-parallel training over a torch.distributed process group (gloo on CPU, NCCL on GPU).

A `Shard` says which rows of every global batch this process trains on. The Trainer with a
shard (trm_core.trainer) keeps the maths of the one-process run at the same global batch, as
the official code's multi-GPU training does (TRM_SPEC §2.1: ARC trains on 4 GPUs):

- every rank reads the same global batch and trains on its contiguous block of rows, so the
  carried slots of rank r are rows [r·B/W, (r+1)·B/W) of the one-process carry;
- the loss is summed over the local rows and divided by the *global* batch size, and the dense
  gradients are summed over ranks (one all-reduce of a flat buffer per step): the gradient of
  the global mean;
- the sparse puzzle-embedding gradients are gathered from every rank (ids and row gradients, in
  rank order = global row order) and each rank applies the same SignSGD update to its full copy
  of the table, as the official `CastedSparseEmbeddingSignSGD_Distributed`;
- the halting exploration draws are drawn for the global batch and sliced, so a W-rank run
  halts where the one-process run does;
- evaluation is split by batches (rank r scores batches r, r+W, ...) and every rank folds all
  the batches' scores in batch order, so it returns the one-process metrics exactly, W times
  faster;
- the carry is gathered into its global form in `state_dict` (every rank must call it) and
  sliced on load, so a checkpoint resumes on any number of ranks that divides the batch.

Without a shard nothing here runs: the one-process path is unchanged bit for bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")

    @classmethod
    def of_process_group(cls) -> Shard | None:
        """This process's shard of the default process group; None without one (or alone)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    def rows(self, global_size: int) -> slice:
        if global_size % self.world_size:
            raise ValueError(
                f"train.global_batch_size={global_size} does not split over "
                f"{self.world_size} workers; use a multiple of the number of workers"
            )
        local = global_size // self.world_size
        return slice(self.rank * local, (self.rank + 1) * local)


def all_reduce_sum_(tensors: Sequence[torch.Tensor]) -> None:
    """Sum `tensors` over ranks in place, with one collective for all of them."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` (same shape on all) concatenated along dim 0, in rank order."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def any_rank(flags: Sequence[bool], device: torch.device) -> list[bool]:
    """For each flag, whether it is set on any rank (every rank must ask, with as many flags):
    decisions that must agree, such as checkpointing on a timer or on one worker's SIGTERM."""
    values = torch.tensor([int(f) for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def sharded_in_order(
    items: Iterable[Any], work: Callable[[Any], Any], shard: Shard
) -> Iterator[Any]:
    """`work(item)` for every item, each computed by one rank (item i by rank i mod W), and
    every result handed to every rank in item order: one all-gather of W results per round,
    so memory holds a round, not the whole sequence. Every rank must iterate the same items
    (the evaluation split, in order); each result must be picklable (CPU tensors)."""
    items = iter(items)
    while True:
        round_ = list(itertools.islice(items, shard.world_size))
        if not round_:
            return
        mine = work(round_[shard.rank]) if shard.rank < len(round_) else None
        results: list[Any] = [None] * shard.world_size
        dist.all_gather_object(results, mine)
        yield from results[: len(round_)]
