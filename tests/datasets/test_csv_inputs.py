"""Reading the published CSVs (datasets.csv_source through sudoku.read_csv and maze.read_csv):
harmless variations are accepted (byte-order mark, one trailing empty line, CRLF), every other
oddity is an error naming the file, the line and the value; rows stream past in blocks, so line
numbers stay exact across blocks and memory does not grow with the file; `keep` holds only the
selected rows while still checking every row."""

import tracemalloc

import numpy as np
import pytest

from datasets import csv_source, maze, sudoku
from datasets.build import build
from datasets.generators import maze as maze_generator
from datasets.store import DatasetStore

HEADER = "source,question,answer,rating\n"
BASE = np.array(
    [(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.uint8
)


def sudoku_lines(count: int, seed: int = 0) -> list[str]:
    """`count` valid CSV data lines (random symmetries of one grid, about half the cells given,
    ratings 0..count-1)."""
    rng = np.random.default_rng(seed)
    index, digits = sudoku.augmentation_maps(count, rng)
    answers = np.take_along_axis(digits, BASE[index].astype(np.intp), axis=1)
    questions = np.where(rng.random(answers.shape) < 0.5, answers, 0).astype(np.uint8)
    text = sudoku.csv_bytes(questions, answers, np.arange(count).astype("S"), source="t")
    return text.decode().splitlines()


def spoil_question(line: str) -> str:
    """The line with its question's first cell replaced by 'x'."""
    source, rest = line.split(",", 1)
    return f"{source},x{rest[1:]}"


def write(path, text: str | bytes):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.fixture
def rows():
    return sudoku_lines(12)


@pytest.fixture(scope="module")
def maze_lines():
    mazes = maze_generator.generate_mazes(3, seed=4, min_path_length=20, size=30)
    lines = ["source,question,answer,rating,num_shortest_paths"]
    for q, a, rating, paths in zip(
        mazes["questions"],
        mazes["answers"],
        mazes["rating"],
        mazes["num_shortest_paths"],
        strict=True,
    ):
        lines.append(f"m,{q.tobytes().decode()},{a.tobytes().decode()},{rating},{paths}")
    return lines


# --------------------------------------------------------------------------- accepted


def test_byte_order_mark_trailing_empty_line_and_crlf_read_like_the_plain_file(tmp_path, rows):
    plain = sudoku.read_csv(write(tmp_path / "plain.csv", HEADER + "\n".join(rows) + "\n"))
    variants = {
        "bom.csv": b"\xef\xbb\xbf" + (HEADER + "\n".join(rows) + "\n").encode(),
        "trailing.csv": HEADER + "\n".join(rows) + "\n\n",
        "crlf.csv": (HEADER + "\n".join(rows) + "\n\n").replace("\n", "\r\n"),
        "unterminated.csv": HEADER + "\n".join(rows),
    }
    for name, text in variants.items():
        read = sudoku.read_csv(write(tmp_path / name, text))
        assert np.array_equal(read.questions, plain.questions), name
        assert np.array_equal(read.answers, plain.answers), name
        assert np.array_equal(read.ratings, plain.ratings), name
    assert len(plain.questions) == 12 and plain.ratings.tolist() == list(range(12))


def test_keep_holds_only_the_selected_rows_in_its_order(tmp_path):
    path = write(tmp_path / "train.csv", HEADER + "\n".join(sudoku_lines(50)) + "\n")
    everything = sudoku.read_csv(path)
    counted = []

    def keep(n):
        counted.append(n)
        return np.array([49, 3, 17])

    picked = sudoku.read_csv(path, keep=keep)
    assert counted == [50]
    assert np.array_equal(picked.questions, everything.questions[[49, 3, 17]])
    assert picked.ratings.tolist() == [49, 3, 17]
    with pytest.raises(ValueError, match=r"outside 0\.\.49"):
        sudoku.read_csv(path, keep=lambda n: np.array([n]))


def test_keep_still_checks_every_row(tmp_path):
    lines = sudoku_lines(20)
    lines[14] = spoil_question(lines[14])  # line 16 of the file, not kept
    path = write(tmp_path / "train.csv", HEADER + "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 16: question has characters other than"):
        sudoku.read_csv(path, keep=lambda n: np.arange(3))


def test_rows_stream_in_blocks_with_exact_lines_and_bounded_memory(tmp_path):
    """200k rows (33 MB) are read in ~6k-row blocks: skipped rows (wrong field count) in early
    blocks must not shift the line numbers of later ones, and holding 10 rows must not cost
    memory in proportion to the file (the old reader held every row as Python strings)."""
    lines = sudoku_lines(200_000, seed=1)
    path = write(tmp_path / "big.csv", HEADER + "\n".join(lines) + "\n")
    tracemalloc.start()
    try:
        picked = sudoku.read_csv(path, keep=lambda n: np.arange(0, n, n // 10))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(picked.questions) == 10 and picked.ratings[-1] == 180_000
    assert peak < 16 * 2**20, f"reading held {peak / 2**20:.0f} MiB"

    lines[4] = "t,only-two"  # line 6
    lines[20_000] += ",extra"  # line 20002, several blocks later
    source, question, answer, rating = lines[150_000].split(",")
    lines[150_000] = ",".join([source, question, answer[::-1], rating])  # line 150002
    write(path, HEADER + "\n".join(lines) + "\n")
    with pytest.raises(ValueError) as error:
        sudoku.read_csv(path)
    message = str(error.value)
    assert "big.csv: 3 malformed row(s)" in message
    assert "line 6: 2 field(s), but the header has 4" in message
    assert "line 20002: 5 field(s), but the header has 4" in message
    assert "line 150002: answer contradicts the question's givens" in message


# --------------------------------------------------------------------------- errors


def test_header_only_files_are_refused_by_name(tmp_path):
    for text in (HEADER, HEADER.strip(), HEADER + "\n"):
        path = write(tmp_path / "test.csv", text)
        with pytest.raises(ValueError, match=r"test\.csv has a header but no data rows"):
            sudoku.read_csv(path)
    with pytest.raises(ValueError, match=r"train\.csv is empty"):
        sudoku.read_csv(write(tmp_path / "train.csv", ""))


def test_a_header_only_test_csv_stops_the_build_and_leaves_no_dataset(tmp_path, rows):
    source = tmp_path / "src"
    source.mkdir()
    write(source / "train.csv", HEADER + "\n".join(rows) + "\n")
    write(source / "test.csv", HEADER)
    with pytest.raises(ValueError, match=r"test\.csv has a header but no data rows"):
        build(
            "sudoku",
            tmp_path / "store",
            quiet=True,
            cache_dir=tmp_path / "cache",
            source=str(source),
            subsample=5,
            augment=1,
            seed=0,
            test_limit=None,
        )
    assert DatasetStore(tmp_path / "store").list() == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--test-limit", "0"], "--test-limit 0 is not allowed: give 1 or more"),
        (["--test-limit", "-3"], "--test-limit -3 is not allowed: give 1 or more"),
        (["--augment", "-1"], "--augment -1 is not allowed: give 0 or more"),
        (["--subsample", "-2"], "--subsample -2 is not allowed: give 1 or more"),
    ],
)
def test_count_limits_are_checked_before_the_build(tmp_path, rows, capsys, argv, message):
    """--test-limit 0 used to end in ZeroDivisionError; now every count is named and bounded."""
    from datasets.build import main

    source = tmp_path / "src"
    source.mkdir()
    write(source / "train.csv", HEADER + "\n".join(rows) + "\n")
    write(source / "test.csv", HEADER + "\n".join(rows[:3]) + "\n")
    out = tmp_path / "store"
    common = ["sudoku", "--source", str(source), "--out", str(out)]
    with pytest.raises(SystemExit) as exited:
        main([*common, "--cache-dir", str(tmp_path / "cache"), "--quiet", *argv])
    assert exited.value.code == 2 and message in capsys.readouterr().err
    assert DatasetStore(out).list() == []


@pytest.mark.parametrize("name", ["tiny_sudoku", "sudoku_mini"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_generated_tasks_need_a_puzzle_in_each_split(tmp_path, name, split):
    counts = {"train": 4, "test": 4, split: 0}
    with pytest.raises(ValueError, match=f"--{split} 0 is not allowed: give 1 or more"):
        build(name, tmp_path / "store", quiet=True, cache_dir=tmp_path / "cache", seed=0, **counts)


@pytest.mark.parametrize(
    "tail, lines",
    [("\n\n\n", [14]), ("\n\n\n\n", [14, 15])],  # several trailing empty lines: all but the last
)
def test_several_trailing_empty_lines_are_errors_by_line(tmp_path, rows, tail, lines):
    path = write(tmp_path / "train.csv", HEADER + "\n".join(rows) + tail)
    with pytest.raises(ValueError) as error:
        sudoku.read_csv(path)
    for line in lines:
        assert f"line {line}: empty line" in str(error.value)
    assert f"{len(lines)} malformed row(s)" in str(error.value)


def test_an_empty_line_inside_the_file_is_an_error_by_line(tmp_path, rows):
    text = HEADER + "\n".join(rows[:5]) + "\n\n" + "\n".join(rows[5:]) + "\n"
    with pytest.raises(
        ValueError, match=r"train\.csv: 1 malformed row\(s\):\n  line 7: empty line"
    ):
        sudoku.read_csv(write(tmp_path / "train.csv", text))


def test_rating_errors_name_file_line_and_value(tmp_path, rows):
    source, question, answer, _ = rows[5].split(",")
    rows[5] = ",".join([source, question, answer, "abc"])  # line 7
    path = write(tmp_path / "train.csv", HEADER + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"train\.csv: .*\n  line 7: rating 'abc' is not a number"):
        sudoku.read_csv(path)


def test_an_empty_rating_is_missing_not_an_error(tmp_path, rows):
    source, question, answer, _ = rows[0].split(",")
    rows[0] = ",".join([source, question, answer, ""])
    read = sudoku.read_csv(write(tmp_path / "train.csv", HEADER + "\n".join(rows) + "\n"))
    assert np.isnan(read.ratings[0]) and read.ratings[1] == 1


def test_non_utf8_bytes_are_errors_by_line(tmp_path, rows):
    data = (HEADER + "\n".join(rows) + "\n").encode()
    lines = data.split(b"\n")
    lines[3] = lines[3].replace(b"t,", b"caf\xe9,", 1)  # Latin-1 é in the source column, line 4
    with pytest.raises(ValueError, match=r"line 4: source is not UTF-8 \(byte 0xE9 at position 4"):
        sudoku.read_csv(write(tmp_path / "train.csv", b"\n".join(lines)))
    lines[3] = lines[3].replace(b"caf\xe9", "café".encode())  # the same in UTF-8 is harmless
    assert len(sudoku.read_csv(write(tmp_path / "ok.csv", b"\n".join(lines))).questions) == 12
    header = "source,question,answer,rating,caf\xe9\n".encode("latin-1")
    with pytest.raises(ValueError, match=r"h\.csv line 1: not UTF-8 \(byte 0xE9 at column 34\)"):
        sudoku.read_csv(write(tmp_path / "h.csv", header + b"\n".join(lines[1:])))


def test_wrong_header_and_wrong_field_counts_are_explained(tmp_path, rows):
    with pytest.raises(ValueError, match=r"x\.csv line 1: header must start with source,question"):
        sudoku.read_csv(write(tmp_path / "x.csv", "question,answer\n" + "\n".join(rows)))
    rows[2] = rows[2].rsplit(",", 1)[0]  # line 4: three fields
    with pytest.raises(ValueError, match=r"line 4: 3 field\(s\), but the header has 4"):
        sudoku.read_csv(write(tmp_path / "y.csv", HEADER + "\n".join(rows) + "\n"))


def test_extra_columns_are_read_by_their_first_name_and_checked_too(tmp_path, rows):
    header = "source,question,answer,rating,note,question\n"  # a repeated name: the first wins
    lines = [f"{row},ok,{row.split(',')[0]}" for row in rows]
    read = sudoku.read_csv(write(tmp_path / "extra.csv", header + "\n".join(lines) + "\n"))
    plain = sudoku.read_csv(write(tmp_path / "plain.csv", HEADER + "\n".join(rows) + "\n"))
    assert np.array_equal(read.questions, plain.questions)
    data = (header + "\n".join(lines) + "\n").encode().replace(b",ok,", b",\xff,", 1)
    with pytest.raises(ValueError, match=r"line 2: note is not UTF-8 \(byte 0xFF at position 1"):
        sudoku.read_csv(write(tmp_path / "bad.csv", data))


def test_a_quoted_line_break_stops_reading_at_its_line(tmp_path, rows):
    rows[1] = '"two\nlines",' + rows[1].split(",", 1)[1]  # starts on line 3
    rows[8] = spoil_question(rows[8])  # would be misnumbered: not reported
    with pytest.raises(ValueError) as error:
        sudoku.read_csv(write(tmp_path / "train.csv", HEADER + "\n".join(rows) + "\n"))
    message = str(error.value)
    assert "line 3: a quoted value holds a line break" in message
    assert "reading stopped at line 3" in message and "line 10" not in message


def test_errors_are_counted_but_only_the_first_ten_shown(tmp_path, rows):
    rows = [spoil_question(row) for row in sudoku_lines(30)]
    with pytest.raises(ValueError) as error:
        sudoku.read_csv(write(tmp_path / "train.csv", HEADER + "\n".join(rows) + "\n"))
    message = str(error.value)
    assert "30 malformed row(s)" in message and "... and 20 more" in message
    assert "line 11: question has characters other than '.', '0'-'9': 'x' at cell 1" in message
    assert "line 12:" not in message


def test_count_lines_matches_what_arrow_splits(tmp_path):
    cases = {
        b"h\na\nb\n": (2, False),
        b"h\na\nb": (2, False),
        b"h\na\nb\n\n": (3, True),
        b"h\r\na\r\n\r\n": (2, True),
        b"h\ra\rb\r": (2, False),
        b"h\n": (0, False),
        b"h\n\n": (1, True),
    }
    for data, (rows, trailing) in cases.items():
        count = csv_source.count_lines(write(tmp_path / "c.csv", data))
        assert (count.rows, count.trailing_empty) == (rows, trailing), data


# --------------------------------------------------------------------------- maze


def test_maze_number_errors_name_file_line_and_value(tmp_path, maze_lines):
    lines = list(maze_lines)
    fields = lines[2].split(",")
    fields[3] = "long"  # rating, line 3
    lines[2] = ",".join(fields)
    fields = lines[3].split(",")
    fields[4] = ""  # num_shortest_paths, line 4
    lines[3] = ",".join(fields)
    path = write(tmp_path / "train.csv", "\n".join(lines) + "\n")
    with pytest.raises(ValueError) as error:
        maze.read_csv(path)
    message = str(error.value)
    assert "train.csv: 2 malformed row(s)" in message
    assert "line 3: rating 'long' is not a number" in message
    assert "line 4: num_shortest_paths is empty; it must be a number" in message


def test_maze_grid_errors_name_their_lines(tmp_path, maze_lines):
    lines = list(maze_lines)
    fields = lines[1].split(",")
    fields[1] = fields[1].replace(" ", "S", 1)  # line 2: a second S
    lines[1] = ",".join(fields)
    fields = lines[3].split(",")
    fields[2] = fields[2][:-1]  # line 4: 899 characters
    lines[3] = ",".join(fields)
    path = write(tmp_path / "train.csv", "\n".join(lines) + "\n\n")  # one empty line: fine
    with pytest.raises(ValueError) as error:
        maze.read_csv(path)
    message = str(error.value)
    assert "line 2: a maze needs exactly one S and one G, got 2 S and 1 G" in message
    assert (
        "line 4: question and answer must have 900 characters (30×30), got 900 and 899" in message
    )


def test_maze_rows_read_with_a_bom_and_header_only_is_refused(tmp_path, maze_lines):
    plain = maze.read_csv(write(tmp_path / "a.csv", "\n".join(maze_lines) + "\n"))
    bom = maze.read_csv(write(tmp_path / "b.csv", b"\xef\xbb\xbf" + "\n".join(maze_lines).encode()))
    assert all(np.array_equal(x, y) for x, y in zip(plain, bom, strict=True))
    assert plain[0].shape == (3, 900) and (plain[3] >= 1).all()
    with pytest.raises(ValueError, match=r"c\.csv has a header but no data rows"):
        maze.read_csv(write(tmp_path / "c.csv", maze_lines[0] + "\n"))
