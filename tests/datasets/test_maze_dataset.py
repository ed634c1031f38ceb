"""Maze-Hard build from the published CSV layout: every label (and every dihedral image of it)
is a valid shortest path of its maze, the test split is never augmented, malformed rows are
reported by line and leave no dataset, and the validity hook scores any shortest path."""

import numpy as np
import pytest

from datasets import maze
from datasets.build import build
from datasets.format import read_split
from datasets.generators import maze as maze_generator
from datasets.store import DatasetStore


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    directory = tmp_path_factory.mktemp("maze-src")
    maze_generator.main(["--train", "6", "--test", "3", "--seed", "5", "--out", str(directory)])
    return directory


def test_dihedral_build_keeps_every_label_a_valid_shortest_path(source, tmp_path):
    ident = build("maze", tmp_path, quiet=True, source=str(source), dihedral=True, seed=0)
    local = DatasetStore(tmp_path).fetch(ident)
    train = read_split(local, "train", extras=("rating", "num_shortest_paths"))
    assert train.num_examples == 6 * 8 and train.num_groups == 6
    assert maze_generator.valid_shortest_paths(train.inputs, train.labels).all()
    assert (train.extras["rating"] >= 111).all() and (train.extras["num_shortest_paths"] >= 1).all()
    # the 8 images of a maze are distinct
    assert len({bytes(row) for row in train.inputs[:8]}) == 8
    test = read_split(local, "test")
    assert test.num_examples == 3 and test.vocab_size == 6 and test.seq_len == 900


def test_without_dihedral_the_build_matches_the_official_default(source, tmp_path):
    ident = build("maze", tmp_path, quiet=True, source=str(source), dihedral=False, seed=0)
    assert read_split(DatasetStore(tmp_path).fetch(ident), "train").num_examples == 6


def test_a_label_that_is_not_a_shortest_path_is_reported_by_line(source, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "test.csv").write_text((source / "test.csv").read_text())
    lines = (source / "train.csv").read_text().splitlines()
    fields = lines[2].split(",")  # line 3 of the file
    answer = fields[2]
    first_path = answer.index("o")
    fields[2] = answer[:first_path] + " " + answer[first_path + 1 :]  # break the path
    lines[2] = ",".join(fields)
    (broken / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 3: answer is not a shortest S→G path"):
        build("maze", tmp_path / "store", quiet=True, source=str(broken), dihedral=False, seed=0)
    assert DatasetStore(tmp_path / "store").list() == []


def test_validity_hook_accepts_any_shortest_path_and_rejects_others(source):
    questions, answers, _, _ = maze.read_csv(source / "test.csv")
    hook = maze.MazeValidity()
    wrong = answers.copy()
    wrong[1][wrong[1] == maze_generator.PATH] = maze_generator.OPEN  # path erased
    hook.update(
        {"inputs": questions},
        np.stack([answers[0], wrong[1], answers[2]]),
        None,
        np.array([True, True, False]),
    )  # third row is padding
    assert hook.compute() == {"valid_shortest_path_accuracy": 0.5}
