"""ARC through the store: a small arc1 build (first tasks of each subset) round-trips its
voting columns and per-puzzle inverse transforms through Parquet, and perfect predictions read
back from the shards score pass@1 = 1 with the manifest's task list."""

from pathlib import Path

import numpy as np
import pytest

from datasets import arc
from datasets.build import build
from datasets.format import read_split
from datasets.loader import eval_batches
from datasets.store import DatasetStore

CONCEPT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "conceptarc"


@pytest.mark.skipif(not CONCEPT.is_dir(), reason=f"ConceptARC copy not found at {CONCEPT}")
def test_small_arc1_build_scores_perfect_predictions(tmp_path):
    ident = build(
        "arc1",
        tmp_path,
        quiet=True,
        concept_dir=str(CONCEPT),
        augment=4,
        seed=42,
        subset_limit=3,
    )
    store = DatasetStore(tmp_path)
    manifest = store.manifest(ident)
    local = store.fetch(ident)
    test = read_split(local, "test", extras=(*arc.VOTING_COLUMNS, "dihedral", "colour_map"))
    train = read_split(local, "train")
    assert manifest["num_puzzle_ids"] == len(train.puzzle_ids)
    assert set(test.puzzle_ids) <= set(train.puzzle_ids)  # test reuses the train versions' ids
    assert test.extras["colour_map"].shape[1] == 10
    hook = arc.ArcVoting(
        ks=(1, 2), test_pairs_per_task=np.array(manifest["arc"]["test_pairs_per_task"])
    )
    for batch in eval_batches(test, 7):
        valid = (batch["labels"] != -100).any(1)
        predictions = np.where(batch["labels"] == -100, 0, batch["labels"])
        hook.update(batch, predictions, np.full(len(valid), 0.9), valid)
    metrics = hook.compute()
    assert metrics["ARC/pass@1"] == 1.0 and metrics["ARC/tasks"] == 3
