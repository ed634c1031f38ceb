"""Sudoku-Extreme build from the published CSV layout: malformed rows are reported with line
numbers and leave no dataset; every augmented solution is a valid Sudoku whose givens agree;
the build is seeded and byte-reproducible; shards hold the paper's token layout."""

import numpy as np
import pytest

from datasets import sudoku
from datasets.build import build
from datasets.format import read_manifest, read_split
from datasets.store import DatasetStore

BASE = np.array(
    [(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.uint8
)


def _write_source(directory, train=30, test=10, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        lines = ["source,question,answer,rating"]
        for i in range(count):
            digits = np.r_[0, rng.permutation(9) + 1].astype(np.uint8)
            answer = digits[BASE]
            question = np.where(rng.random(81) < 0.5, answer, 0)
            q = "".join(str(d) if d else "." for d in question)
            lines.append(f"test,{q},{''.join(map(str, answer))},{i % 7}")
        (directory / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return directory


def test_augmented_solutions_are_valid_and_agree_with_their_givens(tmp_path):
    source = _write_source(tmp_path / "src")
    ident = build(
        "sudoku",
        tmp_path / "store",
        quiet=True,
        source=str(source),
        subsample=20,
        augment=50,
        seed=1,
        test_limit=None,
    )
    local = DatasetStore(tmp_path / "store").fetch(ident)
    train = read_split(local, "train", extras=("rating",))
    assert train.num_examples == 20 * 51 and train.num_groups == 20
    assert train.vocab_size == 11 and train.seq_len == 81
    answers = train.labels.astype(int) - 1
    givens = train.inputs.astype(int) - 1  # blank token 1 → 0
    assert sudoku.valid_solutions(answers).all()
    assert ((givens == 0) | (givens == answers)).all()
    assert set(np.unique(train.inputs)) <= set(range(1, 11))
    # copies are distinct and copy 0 of each group is the original puzzle
    assert len({bytes(row) for row in train.inputs}) > 0.99 * train.num_examples
    test = read_split(local, "test")
    assert test.num_examples == 10 and test.num_groups == 10  # test is not augmented
    manifest = read_manifest(local)
    assert manifest["arguments"] == {
        "subsample": 20,
        "augment": 50,
        "test_limit": None,
        "validation": 0,
    }
    assert [s["name"] for s in manifest["sources"]] == ["train.csv", "test.csv"]


def test_seed_decides_the_bytes(tmp_path):
    source = _write_source(tmp_path / "src")
    kwargs = dict(quiet=True, source=str(source), subsample=10, augment=5, test_limit=None)
    a = build("sudoku", tmp_path / "a", seed=1, **kwargs)
    b = build("sudoku", tmp_path / "b", seed=1, **kwargs)
    c = build("sudoku", tmp_path / "a", seed=2, **kwargs)
    assert a == b and a != c
    shard = "train/part-00000.parquet"
    assert (tmp_path / "a" / a / shard).read_bytes() == (tmp_path / "b" / b / shard).read_bytes()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda q, a: (q[:80], a), "must have 81 characters, got 80 and 81"),
        (lambda q, a: (q[:5] + "x" + q[6:], a), "question has characters other than"),
        (lambda q, a: (q, a[:3] + "0" + a[4:]), "answer has characters other than '1'-'9'"),
        (
            lambda q, a: (("1" if a[0] != "1" else "2") + q[1:], a),
            "contradicts the question's givens",
        ),
        (lambda q, a: (q.replace(q, "." * 81), a[1] + a[0] + a[2:]), "not a valid Sudoku solution"),
    ],
)
def test_malformed_rows_are_reported_by_line_and_no_dataset_is_left(tmp_path, mutate, message):
    source = _write_source(tmp_path / "src")
    path = source / "train.csv"
    lines = path.read_text().splitlines()
    src, q, a, rating = lines[3].split(",")  # line 4 of the file
    q, a = mutate(q, a)
    lines[3] = ",".join([src, q, a, rating])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"line 4: .*{message}"):
        build(
            "sudoku",
            tmp_path / "store",
            quiet=True,
            source=str(source),
            subsample=None,
            augment=1,
            seed=0,
            test_limit=None,
        )
    assert DatasetStore(tmp_path / "store").list() == []


def test_unknown_task_and_missing_source_are_explained(tmp_path):
    with pytest.raises(ValueError, match=r"unknown task 'sudoku9'; choose one of \["):
        build("sudoku9", tmp_path)
    with pytest.raises(FileNotFoundError, match="lacks"):
        build(
            "sudoku",
            tmp_path,
            quiet=True,
            source=str(tmp_path),
            subsample=None,
            augment=1,
            seed=0,
            test_limit=None,
        )


def test_augmentation_maps_are_sudoku_symmetries():
    index, digits = sudoku.augmentation_maps(200, np.random.default_rng(0))
    grids = digits[np.arange(200)[:, None], BASE[index]]
    assert sudoku.valid_solutions(grids).all()
    assert (np.sort(index, axis=1) == np.arange(81)).all()  # each map is a permutation


def test_inspect_prints_the_manifest_and_grids(tmp_path, capsys):
    from datasets.inspect import main

    source = _write_source(tmp_path / "src")
    ident = build(
        "sudoku",
        tmp_path / "store",
        quiet=True,
        source=str(source),
        subsample=5,
        augment=2,
        seed=0,
        test_limit=None,
    )
    main([str(tmp_path / "store" / ident), "--count", "1"])
    out = capsys.readouterr().out
    assert f"dataset {ident} (verified)" in out and '"task": "sudoku"' in out
    label = out.split("label:\n")[1].splitlines()[:9]
    assert all(sorted(row) == list("123456789") for row in label)


def test_mini_sudoku_puzzles_are_unique_with_graded_blanks():
    from datasets import mini_sudoku
    from datasets.generators.sudoku import solve_and_rate

    train, test = mini_sudoku.build(200, 40, seed=3)
    questions = train.inputs.astype(np.int64) - 1
    solutions, counts, _ = solve_and_rate(questions, isomorphs=0)
    assert (counts == 1).all() and (solutions == train.labels - 1).all()
    assert ((questions == 0).sum(1) == train.extras["blanks"]).all()
    assert set(np.unique(train.extras["blanks"])) == {30, 35, 40, 45}
    assert sudoku.valid_solutions(test.labels.astype(int) - 1).all()
    assert not set(map(bytes, train.labels)) & set(map(bytes, test.labels))
