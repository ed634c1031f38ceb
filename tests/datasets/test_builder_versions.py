"""Each builder's version is pinned to the dataset id of a small reference build: changing what a
builder writes without bumping `builder_version` in its datasets/tasks/ file fails here, because
the store would otherwise keep serving datasets built by the old code under the same request.

When this fails after an intended change: bump the task's `builder_version` and add the new
version's id below (keep the old entries: they document what each version built)."""

from pathlib import Path

import pytest

from datasets.build import build
from datasets.store import DatasetStore
from datasets.task import task, task_names

REFERENCE = Path(__file__).parent / "reference"
CONCEPT_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "conceptarc"

# task → (reference build arguments, {builder_version: dataset id})
PINNED = {
    "tiny_sudoku": (
        dict(train=200, test=20, seed=0),
        {1: "2a608de4f78bbf589804cdb51f8871c5", 2: "2eeaca56ac903ca3eeb978b3cbb3e398"},
    ),
    "sudoku_mini": (
        dict(train=60, test=10, box=[2, 3], blanks=[14, 17], seed=0),
        {1: "47eff8cf22ef6d84b2bbd8f67771b534", 2: "9f1cb5c755d47ba9f44271018641790f"},
    ),
    "sudoku": (
        dict(source=str(REFERENCE / "sudoku"), subsample=5, augment=3, test_limit=None, seed=0),
        {
            1: "4d0df2020098a7c727a30fe4684085f6",
            2: "b2da27ab2b035302510e0a2b39306ee6",
            3: "85d0392db246a57f6634920866227c00",
        },
    ),
    "maze": (
        dict(source=str(REFERENCE / "maze"), dihedral=True, seed=0),
        {
            1: "c6c85ca1e2cf1498f1a22b2c7d4d3813",
            2: "cd59df439c34e06d7071d708aa8be041",
            3: "93166811187c01afa25272b08ada1e89",
        },
    ),
    "arc1": (
        dict(concept_dir=str(CONCEPT_DIR), augment=2, subset_limit=2, seed=42),
        {1: "8893fc70d8ed2bdf87770376543aad39"},
    ),
    "arc2": (
        dict(concept_dir=str(CONCEPT_DIR), augment=2, subset_limit=2, seed=42),
        {1: "83e8eb901a9985992e11a402163e544c"},
    ),
}


# The same reference builds with a validation split (versions that have one), so that what a
# validation split holds is pinned too: task → (extra arguments, {builder_version: dataset id}).
VALIDATION_VARIANTS = {
    "tiny_sudoku": (dict(validation=20), {2: "9b65f3c227d189e33eddac05caeb535b"}),
    "sudoku_mini": (dict(validation=10), {2: "34d7780d9128486fae5bfebfe5800409"}),
    "sudoku": (dict(validation=3), {3: "f618c251d521dc17a1e6cba544e70fdf"}),
    "maze": (dict(validation=1), {3: "8c982110a08c185655156ab431cb7341"}),
}


def test_every_task_has_a_pinned_reference_build():
    assert sorted(PINNED) == task_names()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_builder_output_is_pinned_to_its_version(name, tmp_path):
    if name.startswith("arc") and not CONCEPT_DIR.is_dir():
        pytest.skip(f"no ConceptARC folder at {CONCEPT_DIR}")
    arguments, ids = PINNED[name]
    version = task(name).builder_version
    assert version in ids, (
        f"{name}: builder_version {version} has no pinned reference id; add it to PINNED"
    )
    ident = build(name, tmp_path / "store", quiet=True, cache_dir=tmp_path / "cache", **arguments)
    assert DatasetStore(tmp_path / "store").manifest(ident)["builder_version"] == version
    assert ident == ids[version], (
        f"{name}: the reference build's bytes changed (id {ident}, pinned {ids[version]}) but "
        f"builder_version is still {version}: bump it in datasets/tasks/ and pin the new id"
    )


@pytest.mark.parametrize("name", sorted(VALIDATION_VARIANTS))
def test_validation_split_is_pinned_to_its_version(name, tmp_path):
    arguments, ids = VALIDATION_VARIANTS[name]
    version = task(name).builder_version
    assert version in ids, (
        f"{name}: builder_version {version} has no pinned validation-variant id; add it to "
        "VALIDATION_VARIANTS"
    )
    arguments = {**PINNED[name][0], **arguments}
    ident = build(name, tmp_path / "store", quiet=True, cache_dir=tmp_path / "cache", **arguments)
    assert "validation" in DatasetStore(tmp_path / "store").manifest(ident)["splits"]
    assert ident == ids[version], (
        f"{name}: the validation variant's bytes changed (id {ident}, pinned {ids[version]}) "
        f"but builder_version is still {version}: bump it in datasets/tasks/ and pin the new id"
    )


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_layout_known_without_data_is_what_the_build_writes(name, tmp_path):
    """`orchestration.command` validates suites with the layout; trials use the manifest."""
    if name.startswith("arc") and not CONCEPT_DIR.is_dir():
        pytest.skip(f"no ConceptARC folder at {CONCEPT_DIR}")
    arguments, _ = PINNED[name]
    ident = build(name, tmp_path / "store", quiet=True, cache_dir=tmp_path / "cache", **arguments)
    manifest = DatasetStore(tmp_path / "store").manifest(ident)
    layout = task(name).layout(arguments)
    assert (layout.vocab(), layout.seq_len) == (manifest["vocab"], manifest["seq_len"])
