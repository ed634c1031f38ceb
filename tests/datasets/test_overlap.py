"""Overlap counting (datasets/overlap.py): duplicates inside train and test puzzles inside train
are counted exactly, as they are and as any augmentation the builder could make of them
(Sudoku: its symmetry group; maze: the 8 dihedral images), while distinct puzzles are not."""

from pathlib import Path

import numpy as np
import pytest

from datasets import overlap, sudoku
from datasets.generators import maze as maze_generator
from datasets.generators import sudoku as sudoku_generator


@pytest.fixture(scope="module")
def puzzles() -> np.ndarray:
    """300 distinct random minimal puzzles (unique solutions), uint8 [300, 81], 0 = blank."""
    found, _ = sudoku_generator.random_minimal_puzzles(300, seed=11)
    assert len(np.unique(found, axis=0)) == 300
    return found


def augmented(questions: np.ndarray, seed: int) -> np.ndarray:
    """One random symmetry of each puzzle, drawn as the builder draws its augmentations."""
    index, digit_maps = sudoku.augmentation_maps(len(questions), np.random.default_rng(seed))
    moved = np.take_along_axis(questions, index, axis=1)
    return np.take_along_axis(digit_maps, moved.astype(np.intp), axis=1)


def test_fingerprints_do_not_change_under_any_augmentation(puzzles):
    keys = overlap.sudoku_fingerprints(puzzles)
    for seed in range(4):
        assert (overlap.sudoku_fingerprints(augmented(puzzles, seed)) == keys).all()
    # the generator's own transform code draws symmetries independently of the builder's
    assert (
        overlap.sudoku_fingerprints(sudoku_generator.random_isomorphs(puzzles, 3)) == keys
    ).all()
    assert len(np.unique(keys)) == len(puzzles)  # and distinct puzzles get distinct keys here


def test_exact_search_finds_augmentations_and_rejects_near_misses(puzzles):
    images = augmented(puzzles[:40], seed=7)
    assert all(overlap.sudoku_equivalent(p, q) for p, q in zip(puzzles, images, strict=False))
    grids = puzzles[:40].reshape(-1, 9, 9)
    rotated = np.rot90(grids, 1, axes=(1, 2)).reshape(-1, 81)  # a rotation is in the group
    assert all(overlap.sudoku_equivalent(p, q) for p, q in zip(puzzles, rotated, strict=False))
    swapped = grids[:, [3, 1, 2, 0, 4, 5, 6, 7, 8]].reshape(-1, 81)  # rows of two bands: not
    assert not any(overlap.sudoku_equivalent(p, q) for p, q in zip(puzzles, swapped, strict=False))
    relabelled = images.copy()
    for row in relabelled:  # same givens, but two of them exchange digits: no relabelling fits
        cells = np.flatnonzero(row)
        first, second = cells[0], next(c for c in cells if row[c] != row[cells[0]])
        row[[first, second]] = row[[second, first]]
    assert not any(
        overlap.sudoku_equivalent(p, q) for p, q in zip(puzzles, relabelled, strict=False)
    )


def test_sudoku_duplicates_and_test_puzzles_in_train_are_counted(puzzles):
    train = np.concatenate(
        [
            puzzles[:200],
            puzzles[[5, 5, 9]],  # three exact duplicates
            augmented(puzzles[[20, 21]], seed=1),  # two augmented duplicates
        ]
    )
    test = np.concatenate(
        [
            puzzles[200:290],  # unrelated
            augmented(puzzles[[30, 31, 32, 33]], seed=2),  # augmentations of train puzzles
            puzzles[[40]],  # a train puzzle as is
        ]
    )
    counts = overlap.sudoku_overlap(train, test)
    assert counts["duplicate_train_puzzles"] == 5
    assert counts["exact_duplicate_train_puzzles"] == 3
    assert counts["test_puzzles_in_train"] == 5
    assert counts["exact_test_puzzles_in_train"] == 1
    assert counts["unconfirmed"] == 0 and "confirmed by exact search" in counts["method"]
    clean = overlap.sudoku_overlap(puzzles[:150], puzzles[150:])
    assert (clean["duplicate_train_puzzles"], clean["test_puzzles_in_train"]) == (0, 0)


def test_past_the_confirmation_budget_counts_are_marked_as_upper_bounds(puzzles):
    test = augmented(puzzles[[1, 2]], seed=3)
    counts = overlap.sudoku_overlap(puzzles[:100], test, max_confirmations=0)
    assert counts["test_puzzles_in_train"] == 2 and counts["unconfirmed"] == 2
    assert "upper bounds" in counts["method"]


def test_a_full_size_test_split_is_checked_quickly(puzzles):
    """100k test puzzles (random symmetries of one grid, half its cells given, like the
    benchmark source) against 200 train puzzles, with three planted augmentations."""
    base = np.array(
        [(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.uint8
    )
    rng = np.random.default_rng(0)
    index, digit_maps = sudoku.augmentation_maps(100_000, rng)
    grids = np.take_along_axis(digit_maps, base[index].astype(np.intp), axis=1)
    test = np.where(rng.random(grids.shape) < 0.5, grids, 0).astype(np.uint8)
    test[[10, 50_000, 99_999]] = augmented(puzzles[[0, 1, 2]], seed=4)
    counts = overlap.sudoku_overlap(puzzles[:200], test)
    assert counts["test_puzzles_in_train"] == 3 and counts["unconfirmed"] == 0


@pytest.fixture(scope="module")
def mazes() -> np.ndarray:
    found = maze_generator.generate_mazes(12, seed=8, min_path_length=20, size=30)
    return maze_generator.to_tokens(found["questions"])


def test_maze_duplicates_and_dihedral_images_are_counted(mazes):
    def image(rows, k):
        return maze_generator.dihedral(mazes[rows], k, flat=True)

    train = np.concatenate([mazes[:8], mazes[[2]], image([3], 6)])  # one exact, one transposed
    test = np.concatenate([mazes[8:], image([0], 1), image([1], 7), mazes[[4]]])
    counts = overlap.maze_overlap(train, test)
    assert counts["duplicate_train_puzzles"] == 2 and counts["exact_duplicate_train_puzzles"] == 1
    assert counts["test_puzzles_in_train"] == 3 and counts["exact_test_puzzles_in_train"] == 1
    clean = overlap.maze_overlap(mazes[:8], mazes[8:])
    assert (clean["duplicate_train_puzzles"], clean["test_puzzles_in_train"]) == (0, 0)


def test_the_build_warns_records_and_under_strict_refuses(tmp_path, capsys):
    """Through the CLI: a source with a duplicate training puzzle and a test puzzle that is
    an augmentation of a training one builds with a warning and the counts in the manifest;
    `--strict` exits 2 naming both, and the store stays empty."""
    from datasets.build import main
    from datasets.store import DatasetStore

    reference = sudoku.read_csv(Path(__file__).parent / "reference" / "sudoku" / "train.csv")
    n = len(reference.questions)
    train = reference.take(np.concatenate([np.arange(n), [3]]))  # row 3 twice
    questions, answers = sudoku.augment(reference.take(np.array([7])), 1, seed=5)  # original + 1
    test = sudoku.SudokuRows(questions[1:], answers[1:], np.array([1.0]))
    source = tmp_path / "source"
    source.mkdir()
    sudoku.write_csv(source / "train.csv", train)
    sudoku.write_csv(source / "test.csv", test)
    common = ["sudoku", "--source", str(source), "--subsample", "0", "--augment", "2"]
    common += ["--cache-dir", str(tmp_path / "cache"), "--quiet"]

    main([*common, "--out", str(tmp_path / "store")])
    captured = capsys.readouterr()
    ident = captured.out.strip()
    assert "warning: sudoku: 1 duplicate training puzzles; 1 test puzzles" in captured.err
    found = DatasetStore(tmp_path / "store").manifest(ident)["overlap"]
    assert (found["duplicate_train_puzzles"], found["test_puzzles_in_train"]) == (1, 1)
    assert found["exact_test_puzzles_in_train"] == 0  # only an augmentation of one

    with pytest.raises(SystemExit) as exited:
        main([*common, "--out", str(tmp_path / "strict"), "--strict"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "1 duplicate training puzzles" in err and "Refused under --strict" in err
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").rglob("*"))
