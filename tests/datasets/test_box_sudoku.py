"""Sudoku of any box shape (datasets.generators.box_sudoku) and the 6x6 mini task built on it."""

import numpy as np
import pytest

from datasets.generators import box_sudoku


@pytest.mark.parametrize("box", [(2, 2), (2, 3), (3, 3)])
def test_minimal_puzzles_are_unique_minimal_and_seeded(box):
    count = 40 if box != (3, 3) else 4
    puzzles, solutions = box_sudoku.random_minimal_puzzles(count, *box, seed=5)
    side = box[0] * box[1]
    assert puzzles.shape == solutions.shape == (count, side * side)
    assert box_sudoku.is_valid_solution(solutions, *box).all()
    # the givens agree with the solution, the solution is unique, and no given is redundant
    given = puzzles > 0
    assert (puzzles[given] == solutions[given]).all()
    for puzzle in puzzles[:10]:
        assert box_sudoku.count_solutions(puzzle, *box) == 1
        for cell in np.flatnonzero(puzzle)[:6]:
            fewer = puzzle.copy()
            fewer[cell] = 0
            assert box_sudoku.count_solutions(fewer, *box) == 2
    again, _ = box_sudoku.random_minimal_puzzles(count, *box, seed=5)
    assert (again == puzzles).all()
    assert len({bytes(s) for s in solutions}) > count * 0.9  # random grids, not one pattern


def test_solver_counts_known_cases():
    empty4 = np.zeros(16, np.uint8)
    assert box_sudoku.count_solutions(empty4, 2, 2, limit=1000) == 288  # all 4x4 grids
    clash = np.zeros(36, np.uint8)
    clash[:2] = 1  # two 1s in one row
    assert box_sudoku.count_solutions(clash, 2, 3) == 0
    grid = np.array([[(3 * (r % 2) + r // 2 + c) % 6 + 1 for c in range(6)] for r in range(6)])
    assert box_sudoku.is_valid_solution(grid, 2, 3).all()
    broken = grid.copy()
    broken[[0, 1]] = broken[[1, 0]]  # rows swapped inside a band: still valid
    broken[:, [2, 3]] = broken[:, [3, 2]]  # columns across stacks: boxes break
    assert not box_sudoku.is_valid_solution(broken, 2, 3).any()


def test_bad_boxes_and_puzzles_are_explained():
    with pytest.raises(ValueError, match="product <= 16"):
        box_sudoku.random_minimal_puzzles(1, 5, 5, seed=0)
    with pytest.raises(ValueError, match=r"36 cells with values 0\.\.6"):
        box_sudoku.count_solutions(np.full(36, 7), 2, 3)


def test_six_by_six_mini_sudoku_dataset(tmp_path):
    from datasets import mini_sudoku
    from datasets.build import build
    from datasets.store import DatasetStore

    train, test = mini_sudoku.build(300, 60, seed=2, blanks=(14, 17, 20, 23), box=(2, 3))
    assert train.inputs.shape == (300, 36) and train.vocab_size == 8
    questions = train.inputs.astype(np.int64) - 1
    assert ((questions == 0).sum(1) == train.extras["blanks"]).all()
    assert set(np.unique(train.extras["blanks"])) == {14, 17, 20, 23}
    for question, label in zip(questions[:20], train.labels[:20], strict=True):
        assert box_sudoku.count_solutions(question, 2, 3) == 1
        assert box_sudoku.is_valid_solution(label.astype(int) - 1, 2, 3).all()
    assert not set(map(bytes, train.labels)) & set(map(bytes, test.labels))
    with pytest.raises(ValueError, match="choose \\[2, 2\\]"):
        mini_sudoku.build(10, 10, seed=0, box=(2, 4))
    with pytest.raises(ValueError, match="a minimal puzzle had only"):
        mini_sudoku.build(50, 10, seed=0, blanks=(30,), box=(2, 3))
    ident = build(
        "sudoku_mini", tmp_path, quiet=True, train=100, test=20, seed=0, box=[2, 3], blanks=[20]
    )
    manifest = DatasetStore(tmp_path).manifest(ident)
    assert manifest["seq_len"] == 36 and manifest["vocab"]["size"] == 8
    assert manifest["vocab"]["tokens"] == ["PAD", "blank", "1", "2", "3", "4", "5", "6"]
    assert manifest["arguments"]["box"] == [2, 3]
