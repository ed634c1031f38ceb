"""Sudoku-Extreme substitute (datasets/generators/sudoku.py): the solver is right (valid
solutions that keep the givens; 2 for several solutions, 0 for none); random minimal puzzles
are unique and minimal; ratings hardly move with the isomorph seed or under a symmetry
transform, random minimal puzzles rate ≈ 1 while known hardest puzzles and beam outputs rate
an order of magnitude higher; generation is seeded (same seed, same CSV bytes); train and test
share no puzzle, no symmetry class and no lineage; the CSV has the published layout.

Sizes are small: numba compiles for ≈ 30 s on a cold cache (then cached); the tests take ≈ 6 s.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from datasets.generators import sudoku as S

# Well-known hard puzzles (unique): Inkala's "hardest", Golden Nugget, Easter Monster.
HARDEST = [
    "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4..",
    ".......39.....1..5..3.5.8....8.9...6.7...2...1..4.......9.8..5..2....6..4..7.....",
    "1.......2.9.4...5...6...7...5.9.3.......7.......85..4.7.....6...3...9.8...2.....1",
]


def is_valid_grid(grids: np.ndarray) -> np.ndarray:
    g = grids.reshape(-1, 9, 9).astype(np.int64)
    boxes = g.reshape(-1, 3, 3, 3, 3).transpose(0, 1, 3, 2, 4).reshape(-1, 9, 9)
    digits = np.arange(1, 10)
    return (
        (np.sort(g, 2) == digits).all((1, 2))
        & (np.sort(g, 1) == digits[:, None]).all((1, 2))
        & (np.sort(boxes, 2) == digits).all((1, 2))
    )


@pytest.fixture(scope="module")
def minimal() -> tuple[np.ndarray, np.ndarray]:
    return S.random_minimal_puzzles(200, seed=11)


@pytest.fixture(scope="module")
def small_sets() -> dict[int, tuple[list[S.SudokuRow], list[S.SudokuRow]]]:
    def make(seed: int):
        return S.generate(
            12, 24, seed, beam_width=4, iterations=8, hard_min_rating=4, max_per_beam=5
        )

    return {0: make(0), 1: make(1)}


def test_solver_returns_valid_solutions_that_keep_the_givens(minimal):
    puzzles, grids = minimal
    hardest = S.from_strings(HARDEST)
    sols, counts, _ = S.solve_and_rate(np.concatenate([puzzles[:50], hardest]), isomorphs=0)
    assert (counts == 1).all()
    assert is_valid_grid(sols).all()
    assert (sols[:50] == grids[:50]).all()
    both = np.concatenate([puzzles[:50], hardest])
    assert ((both == 0) | (both == sols)).all()
    assert is_valid_grid(grids).all() and ((puzzles == 0) | (puzzles == grids)).all()


def test_solver_counts_several_solutions_and_none(minimal):
    """Empty grid and a minimal puzzle less one given: 2; clashing givens, and a blank filled
    with a digit that clashes with nothing but is not the solution's: 0."""
    puzzles, grids = minimal
    empty = np.zeros((1, 81), np.uint8)
    less_one = puzzles[:1].copy()
    less_one[0, np.nonzero(less_one[0])[0][0]] = 0
    clash = np.zeros((1, 81), np.uint8)
    clash[0, [0, 5]] = 7  # two 7s in row 0
    wrong = puzzles[1:2].copy()
    cell, digit = next(
        (c, d)
        for c in np.nonzero(wrong[0] == 0)[0]
        for d in range(1, 10)
        if d != grids[1, c] and not _clashes(wrong[0], c, d)
    )
    wrong[0, cell] = digit
    sols, counts, _ = S.solve_and_rate(np.concatenate([empty, less_one, clash, wrong]), 0)
    assert counts.tolist() == [2, 2, 0, 0]
    assert is_valid_grid(sols[:2]).all() and (sols[2:] == 0).all()


def _clashes(puzzle: np.ndarray, cell: int, digit: int) -> bool:
    r, c = divmod(cell, 9)
    g = puzzle.reshape(9, 9)
    box = g[r // 3 * 3 : r // 3 * 3 + 3, c // 3 * 3 : c // 3 * 3 + 3]
    return bool((g[r] == digit).any() or (g[:, c] == digit).any() or (box == digit).any())


def test_random_minimal_puzzles_are_unique_and_minimal(minimal):
    """Every puzzle is unique; for 4 of them, blanking any one given leaves several solutions."""
    puzzles, _ = minimal
    _, counts, _ = S.solve_and_rate(puzzles, isomorphs=0)
    assert (counts == 1).all()
    givens = (puzzles > 0).sum(1)
    assert givens.min() >= 17 and givens.max() <= 35
    less_one = [p * (np.arange(81) != c) for p in puzzles[:4] for c in np.nonzero(p)[0]]
    _, counts, _ = S.solve_and_rate(np.array(less_one, np.uint8), isomorphs=0)
    assert (counts == 2).all()
    again, _ = S.random_minimal_puzzles(5, seed=11)
    assert (again == puzzles[:5]).all()


def test_rating_is_stable_across_seeds_and_symmetry_transforms(minimal):
    """Means over many puzzles agree within a few %; a hard puzzle's rating within ≈ 40 %."""
    puzzles, _ = minimal
    r0 = S.solve_and_rate(puzzles, 8, seed=0)[2]
    r1 = S.solve_and_rate(puzzles, 8, seed=1)[2]
    moved = S.solve_and_rate(S.random_isomorphs(puzzles, seed=3), 8, seed=0)[2]
    assert abs(r0.mean() - r1.mean()) < 0.25 and abs(r0.mean() - moved.mean()) < 0.25
    assert np.corrcoef(r0, r1)[0, 1] > 0.7
    hard = S.from_strings(HARDEST)
    h = np.stack([S.solve_and_rate(hard, 8, seed=s)[2] for s in range(4)])
    assert (h.max(0) / h.min(0) < 1.75).all()
    assert (S.solve_and_rate(hard, 8, seed=0)[2] == S.solve_and_rate(hard, 8, seed=0)[2]).all()


def test_random_minimal_rate_about_one_and_beam_outputs_far_higher(minimal):
    """Calibration: random minimal ≈ 1; known hardest and a short beam's best puzzles (re-rated
    with fresh isomorphs, so the beam's selection does not inflate them) ≥ 10× that."""
    puzzles, _ = minimal
    easy = S.solve_and_rate(puzzles, 8, seed=5)[2]
    assert 0.3 < easy.mean() < 3 and np.median(easy) <= 1
    hard = S.solve_and_rate(S.from_strings(HARDEST), 8, seed=5)[2]
    assert hard.min() > 10 * easy.mean()
    found = S.beam_search(puzzles[:10], beam_width=10, iterations=25, seed=0)
    assert len(found.puzzles) > 300 and found.iteration.max() == 25
    best = found.puzzles[np.argsort(-found.ratings)[:10]]
    _, counts, rerated = S.solve_and_rate(best, 8, seed=5)
    assert (counts == 1).all()
    assert np.median(rerated) > 10 * easy.mean()


def test_beam_returns_unique_puzzles_with_their_solutions(minimal):
    puzzles, _ = minimal
    found = S.beam_search(puzzles[:3], beam_width=3, iterations=4, seed=0)
    sols, counts, _ = S.solve_and_rate(found.puzzles, 0)
    assert (counts == 1).all() and (sols == found.solutions).all()
    assert len({p.tobytes() for p in found.puzzles}) == len(found.puzzles)


def test_same_seed_same_csv_bytes_and_other_seed_differs(small_sets, tmp_path):
    a = S.generate(12, 24, 0, beam_width=4, iterations=8, hard_min_rating=4, max_per_beam=5)
    for name, (train, test) in (("a", a), ("b", small_sets[0]), ("c", small_sets[1])):
        S.write_csv(tmp_path / name, train, test)
    for f in ("train.csv", "test.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()


def test_train_and_test_share_no_puzzle_class_or_lineage(small_sets):
    train, test = small_sets[0]
    assert len(train) == 12 and len(test) == 24
    for rows in (train, test):
        assert len({r.question for r in rows}) == len(rows)
    key = {
        split: set(S.symmetry_keys(S.from_strings([r.question for r in rows])))
        for split, rows in (("train", train), ("test", test))
    }
    assert len(key["train"]) == 12 and len(key["test"]) == 24
    assert not key["train"] & key["test"]
    assert not {r.lineage for r in train} & {r.lineage for r in test}
    assert len({r.lineage for r in test if r.source == S.HARD_SOURCE}) >= 2


def test_symmetry_keys_are_invariant_and_separate_different_puzzles(minimal):
    puzzles, _ = minimal
    keys = S.symmetry_keys(puzzles)
    assert keys == S.symmetry_keys(S.random_isomorphs(puzzles, seed=9))
    assert len(set(keys)) == len(keys)


def test_csv_layout_round_trips(small_sets, tmp_path):
    """Header, 81-char fields ('.' blanks in the question, digits in the answer), the answer
    solves the question, ratings parse, and ≈ 74 % of rows are hard."""
    train, test = small_sets[0]
    S.write_csv(tmp_path, train, test)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        text = (tmp_path / name).read_text()
        assert text.splitlines()[0] == "source,question,answer,rating"
        read = list(csv.DictReader(text.splitlines()))
        assert [r["question"] for r in read] == [r.question for r in rows]
        assert {r["source"] for r in read} == {S.EASY_SOURCE, S.HARD_SOURCE}
        assert sum(r["source"] == S.HARD_SOURCE for r in read) == round(0.74 * len(rows))
        for r in read:
            assert len(r["question"]) == 81 and set(r["question"]) <= set(".123456789")
            assert len(r["answer"]) == 81 and set(r["answer"]) <= set("123456789")
            assert all(q in (".", a) for q, a in zip(r["question"], r["answer"], strict=True))
            assert float(r["rating"]) >= 0
        q = S.from_strings([r["question"] for r in read])
        sols, counts, _ = S.solve_and_rate(q, 0)
        assert (counts == 1).all()
        assert S.to_strings(sols) == [r["answer"] for r in read]


def test_main_writes_files_and_prints_the_distribution(tmp_path, capsys):
    S.main(
        [
            "--train",
            "4",
            "--test",
            "8",
            "--seed",
            "3",
            "--out",
            str(tmp_path),
            "--beam-width",
            "3",
            "--iterations",
            "4",
            "--hard-min-rating",
            "2",
            "--max-per-beam",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert (tmp_path / "train.csv").exists() and (tmp_path / "test.csv").exists()
    assert "generated-hard" in out and "p10/25/50/75/90/99" in out
    assert S.rating_summary([]) == "n=0"
