"""The tiny 4×4 Sudoku source and the paper's sampler (§3.1): valid unique puzzles, disjoint
train/test solution grids, seeded reproducibility, one augmentation per group per epoch,
dropped incomplete batches, resumable position, padded test batches."""

import numpy as np
import pytest

from datasets import tiny_sudoku
from datasets.arrays import PuzzleArrays
from datasets.loader import IGNORE_LABEL, TrainBatches, eval_batches


def test_there_are_288_valid_grids_and_each_is_a_sudoku():
    grids = tiny_sudoku.all_solution_grids().reshape(-1, 4, 4)
    assert len(grids) == 288
    digits = np.arange(1, 5)
    assert (np.sort(grids, 2) == digits).all() and (np.sort(grids, 1) == digits[:, None]).all()
    boxes = grids.reshape(-1, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4, 4)
    assert (np.sort(boxes, 2) == digits).all()


def test_puzzles_have_unique_solutions_that_agree_with_their_givens():
    train, test = tiny_sudoku.build(train_size=400, test_size=100, seed=3)
    grids = tiny_sudoku.all_solution_grids()
    for arrays in (train, test):
        puzzles = np.where(arrays.inputs >= 2, arrays.inputs - 1, 0)
        assert (tiny_sudoku.count_solutions(puzzles, grids) == 1).all()
        answers = arrays.labels.astype(int) - 1
        assert (answers[puzzles > 0] == puzzles[puzzles > 0]).all()
        assert ((puzzles > 0).sum(1) == arrays.extras["givens"]).all()
    assert not set(map(bytes, train.labels)) & set(map(bytes, test.labels))


def test_same_seed_same_data_and_different_seed_different_data():
    a, _ = tiny_sudoku.build(100, 10, seed=1)
    b, _ = tiny_sudoku.build(100, 10, seed=1)
    c, _ = tiny_sudoku.build(100, 10, seed=2)
    assert np.array_equal(a.inputs, b.inputs) and not np.array_equal(a.inputs, c.inputs)
    with pytest.raises(ValueError, match=r"givens=\(3, 5\) must lie in \[4, 16\]"):
        tiny_sudoku.build(10, 10, seed=0, givens=(3, 5))


def _grouped_arrays():
    # 5 groups of 3 augmentations each; example value = puzzle index, so batches are readable.
    puzzles = 15
    inputs = np.repeat(np.arange(puzzles, dtype=np.uint8)[:, None], 4, axis=1)
    return PuzzleArrays.one_example_per_puzzle(
        inputs,
        inputs.copy(),
        np.full(5, 3),
        vocab_size=16,
        puzzle_ids=np.arange(puzzles, dtype=np.int32),
    )


def test_each_epoch_visits_every_group_once_and_drops_the_incomplete_batch():
    loader = TrainBatches(_grouped_arrays(), batch_size=2, seed=0)
    epoch = [next(loader) for _ in range(2)]  # 5 groups → 2 full batches, 1 row dropped
    assert loader.state_dict()["batch_in_epoch"] == 2
    groups = np.concatenate([b["puzzle_ids"] for b in epoch]) // 3
    assert len(set(groups.tolist())) == 4
    next(loader)
    assert loader.state_dict()["epoch"] == 1


def test_sampler_position_resumes_exactly():
    straight = TrainBatches(_grouped_arrays(), batch_size=2, seed=7)
    expected = [next(straight)["puzzle_ids"].tolist() for _ in range(7)]
    first = TrainBatches(_grouped_arrays(), batch_size=2, seed=7)
    got = [next(first)["puzzle_ids"].tolist() for _ in range(3)]
    second = TrainBatches(_grouped_arrays(), batch_size=2, seed=7)
    second.load_state_dict(first.state_dict())
    got += [next(second)["puzzle_ids"].tolist() for _ in range(4)]
    assert got == expected


def test_eval_batches_pad_the_last_batch_with_ignored_rows():
    arrays = _grouped_arrays()
    batches = list(eval_batches(arrays, 4))
    assert [len(b["inputs"]) for b in batches] == [4, 4, 4, 4]
    last = batches[-1]
    assert (last["labels"][3] == IGNORE_LABEL).all() and (last["inputs"][3] == 0).all()
    assert last["puzzle_ids"][3] == 0
    # label 0 is PAD and becomes ignored; other labels pass through
    assert (batches[0]["labels"][0] == IGNORE_LABEL).all()
    assert (batches[0]["labels"][1] == 1).all()


def test_a_split_smaller_than_one_eval_batch_is_not_padded_to_the_batch_size():
    arrays = _grouped_arrays()
    batches = list(eval_batches(arrays, 1000))
    assert [len(b["inputs"]) for b in batches] == [arrays.num_examples]
    assert (batches[0]["inputs"][:, 0] == np.arange(15)).all()  # every row real, none padding
