"""The optional validation split (`--validation N`): taken from the training side, never from
test; the right size and columns, readable like any split; disjoint from the training puzzles
(Sudoku CSV: rows outside the subsample, whose training puzzles stay exactly those of the build
without it); seeded; absent at 0; bad sizes refused with the flag and what is allowed."""

import inspect
from pathlib import Path

import numpy as np
import pytest
import yaml

from datasets import sudoku
from datasets.build import build, main
from datasets.format import read_split
from datasets.store import DatasetStore
from datasets.task import task

REFERENCE = Path(__file__).parent / "reference"
SCALES = Path(__file__).resolve().parents[2] / "orchestration" / "conf" / "scale"


def built(tmp_path, name, **arguments):
    """(dataset folder, manifest) of a build into a store under tmp_path."""
    store = tmp_path / "store"
    ident = build(name, store, quiet=True, cache_dir=tmp_path / "cache", **arguments)
    return DatasetStore(store).fetch(ident), DatasetStore(store).manifest(ident), ident


def rows(arrays) -> set[bytes]:
    return {bytes(row) for row in np.ascontiguousarray(arrays.inputs)}


# --------------------------------------------------------------------------- generated tasks

GENERATED = {
    "sudoku_mini": (dict(train=200, test=20, box=[2, 3], blanks=[14, 17, 20, 23]), "blanks"),
    "tiny_sudoku": (dict(train=400, test=20), "givens"),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_validation_split_is_like_train_and_disjoint_from_it(name, tmp_path):
    arguments, column = GENERATED[name]
    local, manifest, ident = built(tmp_path, name, seed=3, validation=40, **arguments)
    assert manifest["arguments"]["validation"] == 40
    assert "train" in manifest["validation_source"] or "stream" in manifest["validation_source"]
    validation = read_split(local, "validation", manifest, extras=task(name).eval_columns)
    train = read_split(local, "train", manifest, extras=(column,))
    assert validation.num_examples == validation.num_groups == 40
    assert manifest["splits"]["validation"]["puzzles"] == 40
    assert validation.seq_len == train.seq_len and validation.vocab_size == train.vocab_size
    # the same balanced mix of levels as train (4 levels → 10 each)
    levels, counts = np.unique(validation.extras[column], return_counts=True)
    assert set(levels) == set(np.unique(train.extras[column])) and (counts == 10).all()
    # valid puzzles: givens agree with a solution
    questions, answers = validation.inputs.astype(int) - 1, validation.labels.astype(int) - 1
    assert ((questions == 0) | (questions == answers)).all()
    blanks = (questions == 0).sum(1)
    if column == "givens":
        blanks = questions.shape[1] - blanks
    assert (blanks == validation.extras[column]).all()
    assert not rows(validation) & rows(train)  # no validation input is a training input
    # the training puzzles are those of the build without a validation split
    _, plain, _ = built(tmp_path / "plain", name, seed=3, validation=0, **arguments)
    assert "validation" not in plain["splits"] and "validation_source" not in plain
    assert plain["arguments"]["validation"] == 0
    assert plain["splits"]["train"] == manifest["splits"]["train"]
    assert plain["splits"]["test"] == manifest["splits"]["test"]
    # seeded: the same request, the same dataset; another seed, another
    assert built(tmp_path / "again", name, seed=3, validation=40, **arguments)[2] == ident
    assert built(tmp_path / "other", name, seed=4, validation=40, **arguments)[2] != ident


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_a_negative_validation_size_is_refused(name, tmp_path):
    arguments, _ = GENERATED[name]
    with pytest.raises(ValueError, match="--validation -1 is not allowed: give 0 or more"):
        built(tmp_path, name, seed=0, validation=-1, **arguments)


def test_tiny_sudoku_refuses_a_validation_split_train_leaves_no_room_for(tmp_path):
    from datasets import tiny_sudoku

    # one given level of 16: each of the 240 training grids is one puzzle, all in train
    with pytest.raises(ValueError, match=r"--validation 5: .*allowed: fewer"):
        tiny_sudoku.build_splits(3000, 10, 0, givens=(16,), validation_size=5)


def test_nine_by_nine_mini_sudoku_has_a_validation_split():
    from datasets import mini_sudoku

    splits = mini_sudoku.build_splits(12, 4, 0, blanks=(30, 40), validation=6)
    assert len(splits["validation"].inputs) == 6 and splits["validation"].seq_len == 81
    answers = splits["validation"].labels.astype(int) - 1
    assert sudoku.valid_solutions(answers).all()
    assert not rows(splits["validation"]) & rows(splits["train"])


def test_the_command_line_flag_reaches_the_builder(tmp_path, capsys):
    out = tmp_path / "store"
    common = ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    main(["tiny_sudoku", "--train", "60", "--test", "8", "--validation", "12", *common])
    ident = capsys.readouterr().out.strip()
    manifest = DatasetStore(out).manifest(ident)
    assert manifest["splits"]["validation"]["examples"] == 12
    with pytest.raises(SystemExit) as exit_:
        main(["sudoku_mini", "--train", "20", "--test", "4", "--validation", "-3", *common])
    assert exit_.value.code == 2
    assert "--validation -3 is not allowed" in capsys.readouterr().err


# --------------------------------------------------------------------------- Sudoku CSV

SUDOKU = dict(source=str(REFERENCE / "sudoku"), augment=2, test_limit=None)


def test_sudoku_validation_rows_come_from_outside_the_subsample(tmp_path):
    source = sudoku.read_csv(REFERENCE / "sudoku" / "train.csv")  # 12 rows
    local, manifest, ident = built(tmp_path, "sudoku", subsample=5, validation=4, seed=1, **SUDOKU)
    validation = read_split(local, "validation", manifest, extras=("rating",))
    train = read_split(local, "train", manifest)
    assert validation.num_examples == validation.num_groups == 4  # never augmented
    assert manifest["splits"]["validation"]["examples"] == 4
    assert "outside the training subsample" in manifest["validation_source"]
    tokens = (source.questions + 1).astype(np.uint8)
    index = {bytes(row): i for i, row in enumerate(tokens)}
    originals = train.inputs[train.group_indices[:-1]]  # copy 0 of each group: the CSV row
    used = {index[bytes(row)] for row in originals}
    held = [index[bytes(row)] for row in validation.inputs]
    assert len(used) == 5 and len(set(held)) == 4 and not used & set(held)
    assert (validation.labels == source.answers[held] + 1).all()
    assert (validation.extras["rating"] == source.ratings[held]).all()
    # the training puzzles are exactly those of the build without validation
    _, plain, _ = built(tmp_path / "plain", "sudoku", subsample=5, validation=0, seed=1, **SUDOKU)
    assert plain["splits"]["train"] == manifest["splits"]["train"]
    assert plain["splits"]["test"] == manifest["splits"]["test"]
    assert "validation" not in plain["splits"]
    assert manifest["overlap"]["validation_puzzles_in_train"] == 0
    assert manifest["overlap"]["exact_validation_puzzles_in_train"] == 0
    assert "validation_puzzles_in_train" not in plain["overlap"]
    again = built(tmp_path / "again", "sudoku", subsample=5, validation=4, seed=1, **SUDOKU)
    assert again[2] == ident


def test_sudoku_without_a_subsample_carves_validation_out_of_train(tmp_path):
    local, manifest, _ = built(tmp_path, "sudoku", subsample=None, validation=3, seed=0, **SUDOKU)
    train = read_split(local, "train", manifest)
    validation = read_split(local, "validation", manifest, extras=("rating",))
    assert train.num_groups == 12 - 3 and validation.num_examples == 3
    assert not rows(validation) & rows(train)
    assert "removed from train" in manifest["validation_source"]


@pytest.mark.parametrize(
    ("subsample", "validation", "message"),
    [
        (5, 8, r"--validation 8 exceeds the 7 train rows .* allowed 0 to 7"),
        (None, 12, r"--validation 12 would leave no training puzzles .* allowed 0 to 11"),
        (5, -1, r"--validation -1 is not allowed: give 0 or more"),
    ],
)
def test_sudoku_refuses_validation_sizes_the_source_cannot_give(
    tmp_path, subsample, validation, message
):
    with pytest.raises(ValueError, match=message):
        built(tmp_path, "sudoku", subsample=subsample, validation=validation, seed=0, **SUDOKU)
    assert DatasetStore(tmp_path / "store").list() == []


def test_validation_puzzles_inside_train_are_counted_and_refused_under_strict(tmp_path):
    source = sudoku.read_csv(REFERENCE / "sudoku" / "train.csv")
    folder = tmp_path / "src"
    folder.mkdir()
    twice = source.take(np.array([0, 1] * 6))  # two puzzles, six copies each
    sudoku.write_csv(folder / "train.csv", twice)
    (folder / "test.csv").write_bytes((REFERENCE / "sudoku" / "test.csv").read_bytes())
    arguments = dict(source=str(folder), subsample=None, augment=1, test_limit=None, seed=0)
    _, manifest, _ = built(tmp_path, "sudoku", validation=2, **arguments)
    assert manifest["overlap"]["validation_puzzles_in_train"] == 2
    assert manifest["overlap"]["exact_validation_puzzles_in_train"] == 2
    with pytest.raises(ValueError, match="2 validation puzzles also in train"):
        built(tmp_path / "strict", "sudoku", validation=2, strict=True, **arguments)


# --------------------------------------------------------------------------- maze

MAZE = dict(source=str(REFERENCE / "maze"), dihedral=True)


def test_maze_validation_is_carved_out_of_train_and_never_augmented(tmp_path):
    from datasets import maze

    questions, answers, ratings, paths = maze.read_csv(REFERENCE / "maze" / "train.csv")  # 4
    local, manifest, ident = built(tmp_path, "maze", validation=1, seed=0, **MAZE)
    extras = ("rating", "num_shortest_paths")
    validation = read_split(local, "validation", manifest, extras=extras)
    train = read_split(local, "train", manifest, extras=extras)
    assert validation.num_examples == validation.num_groups == 1
    assert train.num_groups == 3 and train.num_examples == 3 * 8  # train keeps its 8 images
    (held,) = [i for i, row in enumerate(questions) if (row == validation.inputs[0]).all()]
    assert (validation.labels[0] == answers[held]).all()
    assert validation.extras["rating"][0] == ratings[held]
    assert validation.extras["num_shortest_paths"][0] == paths[held]
    originals = train.inputs[train.group_indices[:-1]]
    assert not any((row == questions[held]).all() for row in originals)
    assert manifest["overlap"]["validation_puzzles_in_train"] == 0
    assert "never dihedrally augmented" in manifest["validation_source"]
    assert built(tmp_path / "again", "maze", validation=1, seed=0, **MAZE)[2] == ident
    _, plain, _ = built(tmp_path / "plain", "maze", validation=0, seed=0, **MAZE)
    assert "validation" not in plain["splits"] and plain["arguments"]["validation"] == 0


@pytest.mark.parametrize(
    ("validation", "message"),
    [(4, r"--validation 4 would leave no training mazes .* allowed 0 to 3"), (-2, "give 0")],
)
def test_maze_refuses_bad_validation_sizes(tmp_path, validation, message):
    with pytest.raises(ValueError, match=message):
        built(tmp_path, "maze", validation=validation, seed=0, **MAZE)


# --------------------------------------------------------------------------- ARC, scales


def test_arc_has_no_validation_split(tmp_path):
    with pytest.raises(ValueError, match=r"arc1 has no validation split.*allowed: 0"):
        built(tmp_path, "arc1", concept_dir=None, augment=1, subset_limit=1, seed=0, validation=5)


@pytest.mark.parametrize("scale", ["mini", "smoke", "paper"])
def test_scale_data_blocks_pass_validation_sizes_the_builders_accept(scale):
    data = yaml.safe_load((SCALES / f"{scale}.yaml").read_text())["data"]
    expected = {
        "mini": {"sudoku": 500, "tiny_sudoku": 500},
        "smoke": {"sudoku": 64, "tiny_sudoku": 64},
        "paper": {"sudoku": 1000, "maze": 0},
    }[scale]
    for name, size in expected.items():
        arguments = data[name]
        assert arguments["validation"] == size
        builder = task(arguments.get("builder") or name).build
        assert "validation" in inspect.signature(builder).parameters
