"""Test-time augmentation transforms (datasets/test_time.py): each is invertible on any token
array (IGNORE_LABEL included), keeps Sudoku grids valid for every box shape and maps mazes to
their dihedral images; the first is the identity, the rest distinct and seeded; tasks without
them (ARC) and impossible sample counts are refused with a clear error."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets import maze
from datasets.dihedral import DIHEDRAL_INVERSE, DIHEDRAL_NAMES
from datasets.generators import box_sudoku
from datasets.test_time import Transform, sample_transforms, sudoku_group_size
from datasets.tiny_sudoku import all_solution_grids

IGNORE_LABEL = -100
REFERENCE = Path(__file__).parent / "reference"

# task → a manifest as the builder writes it (the parts the transforms read)
MANIFESTS = {
    "sudoku": {"arguments": {}, "vocab": {"size": 11}, "seq_len": 81},
    "sudoku_mini": {"arguments": {"box": [2, 3]}, "vocab": {"size": 8}, "seq_len": 36},
    "tiny_sudoku": {"arguments": {}, "vocab": {"size": 6}, "seq_len": 16},
    "maze": {"arguments": {}, "vocab": {"size": 6}, "seq_len": 900},
}
BOXES = {"sudoku": (3, 3), "sudoku_mini": (2, 3), "tiny_sudoku": (2, 2)}


def samples_of(name: str) -> int:
    return 8 if name == "maze" else 12


@pytest.mark.parametrize("name", sorted(MANIFESTS))
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_invert_undoes_apply_on_any_tokens_with_ignore_labels(name, dtype):
    manifest = MANIFESTS[name]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, manifest["vocab"]["size"], (32, manifest["seq_len"])).astype(dtype)
    tokens[rng.random(tokens.shape) < 0.2] = IGNORE_LABEL
    for transform in sample_transforms(name, manifest, samples_of(name), seed=1):
        moved = transform.apply(tokens)
        assert moved.shape == tokens.shape and moved.dtype == tokens.dtype
        # IGNORE_LABEL moves with its cell and keeps its value
        assert ((moved == IGNORE_LABEL) == (tokens[:, transform.positions] == IGNORE_LABEL)).all()
        assert (transform.invert(moved) == tokens).all()
        assert (transform.apply(transform.invert(tokens)) == tokens).all()
    uint8 = np.clip(tokens, 0, None).astype(np.uint8)  # the dtype of the stored tokens
    last = sample_transforms(name, manifest, samples_of(name), seed=1)[-1]
    assert last.apply(uint8).dtype == np.uint8 and (last.invert(last.apply(uint8)) == uint8).all()


@pytest.mark.parametrize("name", sorted(BOXES))
def test_sudoku_transforms_keep_solved_grids_valid_and_givens_consistent(name):
    rows, cols = BOXES[name]
    side = rows * cols
    if name == "tiny_sudoku":
        solutions = all_solution_grids()[::7]
        puzzles = np.where(np.random.default_rng(0).random(solutions.shape) < 0.4, solutions, 0)
    else:
        puzzles, solutions = box_sudoku.random_minimal_puzzles(6, rows, cols, seed=2)
    inputs = (puzzles + 1).astype(np.uint8)  # blank 0 → token 1, digit d → d + 1
    labels = (solutions + 1).astype(np.int64)
    transforms = sample_transforms(name, MANIFESTS[name], 16, seed=5)
    for transform in transforms:
        assert transform.values[0] == 0 and transform.values[1] == 1  # PAD and blank stay
        moved_labels = transform.apply(labels) - 1
        moved_inputs = transform.apply(inputs).astype(np.int64) - 1
        assert box_sudoku.is_valid_solution(moved_labels, rows, cols).all(), transform.name
        # blanks stay blank and every given agrees with the transformed solution
        assert ((moved_inputs == 0) == (transform.apply(inputs) == 1)).all()
        assert ((moved_inputs == 0).sum(1) == (puzzles == 0).sum(1)).all()
        given = moved_inputs > 0
        assert (moved_inputs[given] == moved_labels[given]).all()
        assert set(np.unique(moved_labels)) == set(range(1, side + 1))
    # the samples use the whole group: digits, lines and (square boxes only) transposition
    names = "+".join(t.name for t in transforms)
    for part in ("digits", "bands", "rows", "stacks", "columns"):
        assert part in names
    assert ("transpose" in names) == (rows == cols)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_the_first_is_the_identity_and_the_rest_distinct_and_seeded(name):
    manifest, samples = MANIFESTS[name], samples_of(name)
    transforms = sample_transforms(name, manifest, samples, seed=3)
    assert len(transforms) == samples
    assert transforms[0].name == "identity" and transforms[0].is_identity
    assert not any(t.is_identity for t in transforms[1:])
    assert len(set(transforms)) == samples  # distinct
    assert sample_transforms(name, manifest, samples, seed=3) == transforms
    other = sample_transforms(name, manifest, samples, seed=4)
    assert other[0] == transforms[0] and other != transforms
    assert sample_transforms(name, manifest, 1, seed=3) == transforms[:1]


def test_every_symmetry_of_four_by_four_sudoku_can_be_drawn_and_no_more():
    box = (2, 2)
    assert sudoku_group_size(box) == 24 * 8 * 8 * 2  # digits x rows x columns x transpose
    everything = sample_transforms("tiny_sudoku", MANIFESTS["tiny_sudoku"], 3072, seed=0)
    assert len(set(everything)) == 3072
    with pytest.raises(ValueError, match="4x4 Sudoku has only 3072 symmetries"):
        sample_transforms("tiny_sudoku", MANIFESTS["tiny_sudoku"], 3073, seed=0)


def test_mini_sudoku_reads_its_box_from_the_manifest():
    (transform,) = sample_transforms("sudoku_mini", MANIFESTS["sudoku_mini"], 1, seed=0)
    assert len(transform.positions) == 36 and len(transform.values) == 8
    nine = {"arguments": {"box": [3, 3]}, "vocab": {"size": 11}, "seq_len": 81}
    assert len(sample_transforms("sudoku_mini", nine, 2, seed=0)[1].positions) == 81
    wrong = {"arguments": {"box": [2, 3]}, "vocab": {"size": 11}, "seq_len": 81}
    with pytest.raises(ValueError, match=r"box \[2, 3\] needs vocab 8 and 36 cells"):
        sample_transforms("sudoku_mini", wrong, 2, seed=0)


def test_maze_transforms_are_the_dihedral_images():
    questions, answers, _, _ = maze.read_csv(REFERENCE / "maze" / "train.csv")
    copies = maze.dihedral_copies(questions).reshape(len(questions), 8, -1)
    transforms = sample_transforms("maze", MANIFESTS["maze"], 8, seed=0)
    assert sorted(t.name for t in transforms) == sorted(DIHEDRAL_NAMES)
    for transform in transforms:
        k = DIHEDRAL_NAMES.index(transform.name)
        assert (transform.values == np.arange(6)).all()  # token values never change
        assert (transform.apply(questions) == copies[:, k]).all()
        assert (transform.invert(copies[:, k]) == questions).all()
        inverse = transforms[
            [t.name for t in transforms].index(DIHEDRAL_NAMES[DIHEDRAL_INVERSE[k]])
        ]
        assert (inverse.apply(transform.apply(answers)) == answers).all()
    with pytest.raises(ValueError, match="at most 8"):
        sample_transforms("maze", MANIFESTS["maze"], 9, seed=0)


def test_arc_and_bad_sample_counts_are_refused():
    with pytest.raises(ValueError, match=r"task 'arc1' has no test-time transforms.*'maze'"):
        sample_transforms("arc1", {}, 4, seed=0)
    with pytest.raises(ValueError, match="unknown task"):
        sample_transforms("chess", {}, 4, seed=0)
    with pytest.raises(ValueError, match="samples=0: give 1 or more"):
        sample_transforms("sudoku", MANIFESTS["sudoku"], 0, seed=0)


def test_transform_checks_its_permutations_and_its_inputs():
    with pytest.raises(ValueError, match="positions must be a permutation"):
        Transform("bad", np.array([0, 0, 1]), np.arange(3))
    flip = Transform("flip", np.array([2, 1, 0]), np.array([0, 2, 1]))
    assert (flip.apply(np.array([[0, 1, 2]])) == [[1, 2, 0]]).all()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        flip.apply(np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="positions"):
        flip.apply(np.zeros((2, 4), dtype=np.int64))


def test_the_module_needs_no_torch():
    code = (
        "import sys; from datasets.test_time import sample_transforms; "
        "sample_transforms('sudoku', {'vocab': {'size': 11}, 'seq_len': 81}, 3, 0); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
