"""Maze-Hard substitute generator (datasets/generators/maze.py).

Checked against plain-Python references written here, not against the module's own kernels:
- every label is a shortest S→G path (BFS in Python), of length >= min_path_length, with
  nothing else changed, and it is the path the documented tie-break rule picks;
- num_shortest_paths on hand-made mazes (open 3×3 grid: C(4, 2) = 6), against a Python DP on
  generated mazes, and its saturation;
- the sampler's distribution on a 3×3 grid equals exact enumeration of the recipe (walls
  first, then S and G among the free cells), by a chi-square test;
- determinism: same seed → identical CSV bytes (whatever the thread count, and a smaller count
  is a prefix), different seed → different files;
- is_valid_shortest_path accepts labels and every dihedral image of (question, label), on
  strings, ASCII codes and tokens, and rejects a too-long path, a broken path, a path through
  a wall and a modified wall;
- train and test share no maze, not even up to a dihedral transform.

Small grids keep this fast; one test builds two real 30×30 mazes.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import deque

import numpy as np
import pytest

from datasets.generators import maze

# ---------------------------------------------------------------------------------------------
# plain-Python references

MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left: the tie-break order


def find(text: str, size: int, char: str) -> tuple[int, int]:
    return divmod(text.index(char), size)


def distances(text: str, size: int, source: tuple[int, int]) -> dict[tuple[int, int], int]:
    dist = {source: 0}
    todo = deque([source])
    while todo:
        r, c = todo.popleft()
        for dr, dc in MOVES:
            nb = (r + dr, c + dc)
            inside = 0 <= nb[0] < size and 0 <= nb[1] < size
            if inside and nb not in dist and text[nb[0] * size + nb[1]] != "#":
                dist[nb] = dist[(r, c)] + 1
                todo.append(nb)
    return dist


def shortest_steps(text: str, size: int) -> int | None:
    return distances(text, size, find(text, size, "S")).get(find(text, size, "G"))


def rule_label(question: str, size: int) -> str:
    """The documented tie-break: from S, step to the first neighbour (up, right, down, left)
    that is one step closer to G."""
    to_goal = distances(question, size, find(question, size, "G"))
    cells = list(question)
    cell = find(question, size, "S")
    while to_goal[cell] > 0:
        for dr, dc in MOVES:
            nb = (cell[0] + dr, cell[1] + dc)
            if to_goal.get(nb) == to_goal[cell] - 1:
                cell = nb
                break
        if to_goal[cell] > 0:
            cells[cell[0] * size + cell[1]] = "o"
    return "".join(cells)


def count_paths(question: str, size: int) -> int:
    """Python DP over BFS layers from G (exact integers)."""
    to_goal = distances(question, size, find(question, size, "G"))
    ways = {}
    for cell, d in sorted(to_goal.items(), key=lambda item: item[1]):
        ways[cell] = 1 if d == 0 else 0
        for dr, dc in MOVES:
            nb = (cell[0] + dr, cell[1] + dc)
            if to_goal.get(nb) == d - 1:
                ways[cell] += ways[nb]
    return ways[find(question, size, "S")]


def path_walk(question: str, answer: str, size: int) -> list[tuple[int, int]]:
    """The cells of the marked path from S to G, checking it is a simple 4-connected walk."""
    on = {divmod(i, size) for i, ch in enumerate(answer) if ch in "oSG"}
    walk = [find(question, size, "S")]
    while walk[-1] != find(question, size, "G"):
        r, c = walk[-1]
        nexts = [(r + dr, c + dc) for dr, dc in MOVES if (r + dr, c + dc) in on]
        nexts = [nb for nb in nexts if len(walk) < 2 or nb != walk[-2]]
        assert len(nexts) == 1, f"path forks or breaks at {walk[-1]}"
        walk.append(nexts[0])
    assert len(walk) == len(on), "marked cells off the S→G path"
    return walk


def grid(rows: list[str]) -> str:
    return "".join(rows)


def codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def text(array: np.ndarray) -> str:
    return np.ascontiguousarray(array, dtype=np.uint8).tobytes().decode()


# ---------------------------------------------------------------------------------------------
# fixtures

SMALL = dict(min_path_length=30, size=12)


@pytest.fixture(scope="module")
def small() -> dict:
    return maze.generate_mazes(12, seed=0, **SMALL)


@pytest.fixture(scope="module")
def full() -> dict:
    return maze.generate_mazes(2, seed=1)  # the real settings: 30×30, >= 111 steps


def as_texts(mazes: dict) -> list[tuple[str, str]]:
    return [(text(q), text(a)) for q, a in zip(mazes["questions"], mazes["answers"], strict=True)]


# ---------------------------------------------------------------------------------------------
# labels


@pytest.mark.parametrize("name, size, least", [("small", 12, 30), ("full", 30, 111)])
def test_labels_are_shortest_paths(name, size, least, request):
    mazes = request.getfixturevalue(name)
    n = size * size
    for i, (question, answer) in enumerate(as_texts(mazes)):
        assert len(question) == len(answer) == n
        assert set(question) <= set("# SG") and question.count("S") == question.count("G") == 1
        changed = [(q, a) for q, a in zip(question, answer, strict=True) if q != a]
        assert all(q == " " and a == "o" for q, a in changed), "only open cells may become 'o'"
        steps = shortest_steps(question, size)
        walk = path_walk(question, answer, size)
        assert len(walk) - 1 == steps == mazes["rating"][i] >= least
        assert len(changed) == steps - 1
        walls = question.count("#")
        assert walls == mazes["wall_count"][i]
        assert round(0.3 * n) <= walls <= round(0.5 * n)


def test_labels_follow_the_tie_break_rule(small, full):
    for mazes, size in ((small, 12), (full, 30)):
        for question, answer in as_texts(mazes):
            assert answer == rule_label(question, size)
            # The label is a function of the question alone, in any representation.
            assert maze.solve(question)[0] == answer
            tokens = maze.to_tokens(question)
            again, steps, _ = maze.solve(tokens)
            assert np.array_equal(again, maze.to_tokens(answer))
            assert steps == shortest_steps(question, size)
            square, _, _ = maze.solve(codes(question).reshape(size, size))
            assert text(square.ravel()) == answer


# ---------------------------------------------------------------------------------------------
# number of shortest paths


@pytest.mark.parametrize(
    "rows, steps, paths",
    [
        (["S  ", "   ", "  G"], 4, 6),  # open 3×3, corner to corner: C(4, 2)
        (["S   ", "    ", "    ", "   G"], 6, 20),  # C(6, 3)
        (["S  ", " # ", "  G"], 4, 2),  # around the centre wall either way
        (["S# ", " # ", "  G"], 4, 1),  # a single corridor
        (["SG ", "   ", "   "], 1, 1),  # adjacent
        (["S #", "  #", "##G"], None, None),  # unreachable
    ],
)
def test_num_shortest_paths_on_hand_made_mazes(rows, steps, paths):
    question = grid(rows)
    if steps is None:
        with pytest.raises(ValueError, match="not reachable"):
            maze.solve(question)
        return
    answer, got_steps, got_paths = maze.solve(question)
    assert (got_steps, got_paths) == (steps, paths)
    assert paths == count_paths(question, len(rows))
    assert path_walk(question, answer, len(rows))


def test_num_shortest_paths_matches_python_dp_and_saturates(small, full):
    for mazes, size in ((small, 12), (full, 30)):
        for (question, _), paths in zip(as_texts(mazes), mazes["num_shortest_paths"], strict=True):
            assert paths == count_paths(question, size)
    # Open 30×30, corner to corner: C(58, 29) ≈ 3e16 paths, exact in int64.
    open_30 = "S" + " " * (30 * 30 - 2) + "G"
    assert maze.solve(open_30)[2] == math.comb(58, 29)
    # Open 64×64: C(126, 63) ≈ 6e36 saturates.
    open_64 = "S" + " " * (64 * 64 - 2) + "G"
    assert maze.solve(open_64)[2] == maze.SATURATED


# ---------------------------------------------------------------------------------------------
# the sampler's distribution


def test_sampler_matches_exact_enumeration_of_the_recipe():
    """3×3 grid, 2..4 walls, keep >= 4 steps. Reference: walls uniform among all cells for a
    uniform wall count, then S and G uniform among the free cells (the recipe as documented;
    the kernel draws S and G first and cells lazily, which must not change the law)."""
    size, low, high, least = 3, 2, 4, 4
    n = size * size
    exact: dict[str, float] = {}
    for walls in range(low, high + 1):
        free_pairs = (n - walls) * (n - walls - 1)
        weight = 1 / (high - low + 1) / math.comb(n, walls) / free_pairs
        for wall_cells in itertools.combinations(range(n), walls):
            cells = [" "] * n
            for c in wall_cells:
                cells[c] = "#"
            free = [c for c in range(n) if cells[c] == " "]
            for s, g in itertools.permutations(free, 2):
                candidate = cells.copy()
                candidate[s], candidate[g] = "S", "G"
                key = "".join(candidate)
                if (shortest_steps(key, size) or 0) >= least:
                    exact[key] = exact.get(key, 0.0) + weight
    total = sum(exact.values())

    raw = np.random.default_rng(123).bit_generator.random_raw(1 << 19)
    out_grids = np.empty((200_000, n), dtype=np.uint8)
    out_steps = np.empty(200_000, dtype=np.int64)
    tried, kept = maze._search(raw, size, low, high, least, out_grids, out_steps)
    seen: dict[str, int] = {}
    for row, steps in zip(maze.to_codes(out_grids[:kept]), out_steps[:kept], strict=True):
        key = text(row)
        if key not in seen:
            assert steps == shortest_steps(key, size)
        seen[key] = seen.get(key, 0) + 1
    assert set(seen) <= set(exact), "sampled a maze the recipe cannot produce or keep"
    assert kept > 20 * len(exact)
    # Acceptance rate and a chi-square over all keepable mazes.
    assert abs(kept / tried - total) < 5 * math.sqrt(total * (1 - total) / tried)
    expected = {key: kept * p / total for key, p in exact.items()}
    chi2 = sum((seen.get(key, 0) - e) ** 2 / e for key, e in expected.items())
    dof = len(exact) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof, kept)


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_bytes_different_seed_different(tmp_path, small):
    again = maze.generate_mazes(12, seed=0, workers=1, **SMALL)
    prefix = maze.generate_mazes(5, seed=0, workers=2, **SMALL)
    other = maze.generate_mazes(12, seed=1, **SMALL)
    for key in small:
        assert np.array_equal(small[key], again[key])
        assert np.array_equal(small[key][:5], prefix[key])
    files = [
        maze.write_csv(tmp_path / name, mazes, mazes)
        for name, mazes in (("a", small), ("b", again), ("c", other))
    ]
    assert [p.name for p in files[0]] == ["train.csv", "test.csv"]
    assert files[0][0].read_bytes() == files[1][0].read_bytes()
    assert files[0][0].read_bytes() != files[2][0].read_bytes()


# ---------------------------------------------------------------------------------------------
# validity check and dihedral transforms


def test_is_valid_shortest_path_accepts_labels_in_every_representation(small, full):
    for mazes in (small, full):
        questions, answers = mazes["questions"], mazes["answers"]
        assert maze.valid_shortest_paths(questions, answers).all()
        tokens_q, tokens_a = maze.to_tokens(questions), maze.to_tokens(answers)
        assert tokens_q.max() <= maze.GOAL and tokens_a.max() == maze.PATH
        assert maze.valid_shortest_paths(tokens_q, tokens_a).all()
        assert maze.valid_shortest_paths([text(q) for q in questions], tokens_a).all()
        for question, answer in as_texts(mazes):
            assert maze.is_valid_shortest_path(question, answer)
        # The question itself marks no path: invalid (unless S and G touch).
        assert not maze.valid_shortest_paths(questions, questions).any()


@pytest.mark.parametrize("k", range(8))
def test_dihedral_images_stay_valid_shortest_paths(k, small, full):
    for mazes, size in ((small, 12), (full, 30)):
        squares_q = mazes["questions"].reshape(-1, size, size)
        squares_a = mazes["answers"].reshape(-1, size, size)
        image_q, image_a = maze.dihedral(squares_q, k), maze.dihedral(squares_a, k)
        assert maze.valid_shortest_paths(image_q, image_a).all()
        tokens = maze.to_tokens(mazes["answers"])
        flat = maze.dihedral(tokens, k, flat=True)
        assert maze.valid_shortest_paths(
            maze.to_tokens(image_q.reshape(len(tokens), -1)), flat
        ).all()
        assert np.array_equal(maze.inverse_dihedral(image_q, k), squares_q)
        assert np.array_equal(maze.inverse_dihedral(flat, k, flat=True), tokens)
        for q, a in zip(image_q, image_a, strict=True):
            assert maze.is_valid_shortest_path(q, a)


def test_dihedral_order_and_inverses():
    square = np.arange(18).reshape(2, 3, 3)  # a batch of two asymmetric grids
    a = np.arange(9).reshape(3, 3)
    expected = [
        a,
        np.rot90(a),
        np.rot90(a, 2),
        np.rot90(a, 3),
        a[:, ::-1],
        a[::-1],
        a.T,
        a[::-1, ::-1].T,  # anti-transpose: out[i, j] = a[2 - j, 2 - i]
    ]
    for k, want in enumerate(expected):
        assert np.array_equal(maze.dihedral(a, k), want), maze.DIHEDRAL_NAMES[k]
        assert np.array_equal(maze.inverse_dihedral(maze.dihedral(square, k), k), square)
    images = {maze.dihedral(a, k).tobytes() for k in range(8)}
    assert len(images) == 8
    with pytest.raises(ValueError, match=r"0\.\.7"):
        maze.dihedral(a, 8)


# 4×4: shortest S→G is 3 steps along the top row.
OPEN_4 = grid(["S  G", "    ", "    ", "    "])
# 3×3 with a wall between S and G: the shortest path goes round below it (4 steps).
WALLED_3 = grid(["S#G", "   ", "   "])
# 3×3 with a wall right of S: 4 steps; through the wall would also take 4.
CORNER_3 = grid(["S# ", "   ", "  G"])


@pytest.mark.parametrize(
    "question, prediction, why",
    [
        (OPEN_4, grid(["SooG", "    ", "    ", "    "]), "the shortest path"),
        (OPEN_4, grid(["S  G", "oooo", "    ", "    "]), "too long: detour through row 2"),
        (OPEN_4, grid(["So G", "    ", "    ", "    "]), "broken: a gap"),
        (OPEN_4, grid(["S oG", "    ", " o  ", "    "]), "broken, right count"),
        (OPEN_4, grid(["SooG", " o  ", "    ", "    "]), "extra branch"),
        (OPEN_4, grid(["SooG", "    ", "  # ", "    "]), "modified: wall added"),
        (OPEN_4, grid(["oooG", "    ", "    ", "    "]), "S overwritten"),
        (WALLED_3, grid(["S#G", "ooo", "   "]), "the shortest path"),
        (WALLED_3, grid(["S#G", "o o", "ooo"]), "too long: round the bottom"),
        (WALLED_3, grid(["SoG", "   ", "   "]), "through a wall"),
        (WALLED_3, grid(["S G", "ooo", "   "]), "modified: wall removed"),
        (WALLED_3, grid(["S#G", "oo ", " o "]), "right count, wrong cells"),
        (CORNER_3, grid(["S# ", "ooo", "  G"]), "the shortest path"),
        (CORNER_3, grid(["Soo", "  o", "  G"]), "through a wall, right count"),
    ],
)
def test_is_valid_shortest_path_on_hand_made_cases(question, prediction, why):
    valid = why == "the shortest path"
    assert maze.is_valid_shortest_path(question, prediction) is valid, why
    side = math.isqrt(len(question))
    tokens_q = maze.to_tokens(question).reshape(side, side)
    tokens_p = maze.to_tokens(prediction).reshape(side, side)
    assert maze.is_valid_shortest_path(tokens_q, tokens_p) is valid, why


def test_is_valid_shortest_path_rejects_edits_of_generated_labels(full):
    rng = np.random.default_rng(0)
    question, answer = as_texts(full)[0]
    q = codes(question)
    a = codes(answer).copy()
    marked = np.flatnonzero(a == ord("o"))
    walls = np.flatnonzero(q == ord("#"))
    untouched = np.flatnonzero(a == ord(" "))
    cases = {}
    gap = a.copy()
    gap[marked[len(marked) // 2]] = ord(" ")
    cases["broken"] = gap
    moved = gap.copy()
    moved[untouched[rng.integers(len(untouched))]] = ord("o")  # right count, not a path
    cases["broken, right count"] = moved
    for name, cell, char in (
        ("wall opened", walls[0], " "),
        ("wall marked", walls[1], "o"),
        ("wall added", untouched[0], "#"),
    ):
        edited = a.copy()
        edited[cell] = ord(char)
        cases[name] = edited
    padded = maze.to_tokens(a)
    padded[untouched[0]] = maze.PAD
    assert maze.is_valid_shortest_path(question, a)
    for name, prediction in cases.items():
        assert not maze.is_valid_shortest_path(question, prediction), name
    assert not maze.is_valid_shortest_path(question, padded)
    batch = maze.valid_shortest_paths(np.stack([q] * len(cases)), np.stack(list(cases.values())))
    assert batch.shape == (len(cases),) and not batch.any()


def test_unreachable_and_malformed_questions():
    unreachable = grid(["S #", "  #", "##G"])
    assert not maze.is_valid_shortest_path(unreachable, unreachable)
    with pytest.raises(ValueError, match="one S and one G"):
        maze.is_valid_shortest_path(grid(["S  ", "   ", "  S"]), grid(["S  ", "   ", "  S"]))
    with pytest.raises(ValueError, match="characters"):
        maze.to_tokens("S x" + " " * 5 + "G")
    with pytest.raises(ValueError, match="size"):
        maze.solve("S G")


# ---------------------------------------------------------------------------------------------
# train/test split and the command line


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_main_writes_disjoint_train_and_test(tmp_path, capsys):
    out = tmp_path / "maze"
    args = ["--train", "8", "--test", "8", "--seed", "3", "--out", str(out)]
    assert maze.main([*args, "--min-path-length", "20", "--size", "10"]) == 0
    printed = capsys.readouterr().out
    assert "steps min/q1/median/q3/max" in printed and "num_shortest_paths" in printed
    with open(out / "train.csv") as handle:
        assert handle.readline() == "source,question,answer,rating,num_shortest_paths\n"
    train, test = read_csv(out / "train.csv"), read_csv(out / "test.csv")
    assert len(train) == len(test) == 8
    for row in train + test:
        assert len(row["question"]) == len(row["answer"]) == 100
        assert int(row["rating"]) == shortest_steps(row["question"], 10) >= 20
        assert int(row["num_shortest_paths"]) == count_paths(row["question"], 10)

    def images(question: str) -> set[str]:
        square = codes(question).reshape(10, 10)
        return {text(maze.dihedral(square, k).ravel()) for k in range(8)}

    train_images = set().union(*(images(row["question"]) for row in train))
    assert not train_images & {row["question"] for row in test}
    assert len({row["question"] for row in train}) == 8


def test_exclude_skips_given_mazes_and_their_images():
    first = maze.generate_mazes(6, seed=0, **SMALL)
    rotated = maze.dihedral(first["questions"].reshape(-1, 12, 12), 1).reshape(6, -1)
    # Same seed and stream: without `exclude` these would be the same six mazes.
    second = maze.generate_mazes(6, seed=0, exclude=rotated, **SMALL)
    assert not {text(q) for q in first["questions"]} & {text(q) for q in second["questions"]}
    third = maze.generate_mazes(6, seed=0, exclude=first["questions"][:3], **SMALL)
    assert np.array_equal(third["questions"][:3], first["questions"][3:6])
