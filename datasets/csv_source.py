"""Streaming, columnar reading of the published puzzle CSVs (Sudoku-Extreme, Maze-Hard).

Why streaming: the Sudoku-Extreme train CSV has 3.83M rows; read as Python strings it took
5 GiB. Here pyarrow's CSV reader hands over blocks of rows as binary columns (offsets + bytes),
which the task readers check and convert with numpy one block at a time, so memory is one block
plus what the caller keeps (`Selection`), whatever the file's size.

Rules, the same for every task; each violation is reported with the file and line:
- line 1 is the header (a UTF-8 byte-order mark before it is skipped) and at least one data row
  follows;
- one row per line, with as many fields as the header; a quoted field may hold commas but not a
  line break (a break would shift every later line number, so reading stops there);
- no empty lines, except that the last line may be empty (a file ending in a blank line);
- all text is UTF-8.

Every row is checked; errors are collected in a `RowErrors` (first few by line, all counted) and
raised once the whole file has been read.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from datasets.validation import RowErrors

BOM = b"\xef\xbb\xbf"
BLOCK_SIZE = 1 << 20  # bytes per block: ~6k Sudoku rows; arrow reads ~20 blocks ahead
COUNT_READ = 2 << 20  # bytes read at a time when counting lines
LINE_BREAKS = (ord("\n"), ord("\r"))


def read_header(path: Path, required: Sequence[str]) -> list[str]:
    """The header's field names (stripped); it must start with `required`."""
    with open(path, "rb") as handle:
        raw = handle.readline()
    if not raw:
        raise ValueError(f"{path} is empty; expected a header starting with {','.join(required)}")
    raw = raw.removeprefix(BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} line 1: not UTF-8 (byte 0x{raw[err.start]:02X} at column {err.start + 1}); "
            "save the file as UTF-8"
        ) from None
    names = [name.strip() for name in next(csv.reader([text]), [])]
    if names[: len(required)] != list(required):
        raise ValueError(f"{path} line 1: header must start with {','.join(required)}, got {names}")
    return names


@dataclass(frozen=True)
class LineCount:
    """What a byte scan says about a file's lines, before pyarrow reads it."""

    rows: int  # lines after the header, the last one included even when empty
    trailing_empty: bool  # the file ends with an empty line (allowed once)

    @property
    def data_rows(self) -> int:
        return self.rows - self.trailing_empty

    @property
    def last_line(self) -> int:
        return self.rows + 1


def count_lines(path: Path) -> LineCount:
    """Count line breaks (\\n, \\r\\n and a lone \\r, as pyarrow splits rows) in C-speed
    byte scans: `Selection` needs the row count before the rows stream past."""
    breaks, last, tail = 0, b"", b""
    with open(path, "rb") as handle:
        while block := handle.read(COUNT_READ):
            breaks += block.count(b"\n")
            if b"\r" in block:  # rare: counting \r and \r\n too would triple the scan time
                pairs = block.count(b"\r\n") + (last == b"\r" and block[:1] == b"\n")
                breaks += block.count(b"\r") - pairs
            last, tail = block[-1:], (tail + block[-4:])[-4:]
    if not tail:
        return LineCount(0, False)
    lines = breaks + (tail[-1] not in LINE_BREAKS)  # an unterminated last line is a line too
    body = tail[:-2] if tail.endswith(b"\r\n") else tail[:-1]
    trailing_empty = tail[-1] in LINE_BREAKS and body[-1:] in (b"\n", b"\r") and lines > 1
    return LineCount(lines - 1, trailing_empty)


class Selection:
    """The rows a reader keeps of a file's `total` data rows: `keep(total)` gives their indices
    (their order is the output order; each index in 0..total-1), None keeps all. Rows stream
    past once, and `pick` says which of a block go where."""

    def __init__(self, total: int, keep: Callable[[int], np.ndarray] | None):
        self.total = total
        if keep is None:
            self.size, self.sorted, self.order = total, None, None
            return
        indices = np.asarray(keep(total))
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise ValueError(f"keep({total}) must give a 1-D integer array, got {indices.dtype}")
        if len(indices) and (indices.min() < 0 or indices.max() >= total):
            raise ValueError(f"keep({total}) gave row indices outside 0..{total - 1}")
        self.order = np.argsort(indices, kind="stable")
        self.sorted = indices[self.order].astype(np.int64)
        self.size = len(indices)

    def pick(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the block [start, start + count) to keep, their positions in the output)."""
        if self.sorted is None:
            rows = np.arange(count)
            return rows, rows + start
        low, high = np.searchsorted(self.sorted, [start, start + count])
        return self.sorted[low:high] - start, self.order[low:high]


@dataclass
class CsvChunk:
    """A block of rows that passed the file-level rules: binary columns by header name, the
    rows' line numbers, and `start`, the index of its first row among the file's data rows."""

    start: int
    lines: np.ndarray  # int64 [n]
    columns: dict[str, pa.Array]

    def __len__(self) -> int:
        return len(self.lines)

    def lengths(self, name: str) -> np.ndarray:
        """Byte length of each value of column `name`."""
        return np.diff(_buffers(self.columns[name])[0])

    def fixed_width(self, name: str, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Column `name` as a uint8 [n, width] matrix of bytes (a read-only view of the block
        when every value fits), and which rows had exactly `width` bytes (others are zero)."""
        offsets, data = _buffers(self.columns[name])
        ok = np.diff(offsets) == width
        if ok.all():  # the usual case: the values are one contiguous [n, width] block
            return data.reshape(-1, width), ok
        matrix = np.zeros((len(ok), width), dtype=np.uint8)
        matrix[ok] = data[offsets[:-1][ok, None] + np.arange(width)]
        return matrix, ok

    def question_and_answer(
        self, width: int, errors: RowErrors, shape: str = ""
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `question` and `answer` columns as uint8 [n, width] byte matrices, and which rows
        had both at exactly `width` characters; the others go to `errors` with their lengths
        (`shape`, e.g. " (30×30)", is added to that message)."""
        questions, question_ok = self.fixed_width("question", width)
        answers, answer_ok = self.fixed_width("answer", width)
        shaped = question_ok & answer_ok
        misshaped = np.flatnonzero(~shaped)
        errors.add(
            self.lines[misshaped],
            lambda i: (
                f"question and answer must have {width} characters{shape}, got "
                f"{len(self.text('question', misshaped[i]))} and "
                f"{len(self.text('answer', misshaped[i]))}"
            ),
        )
        return questions, answers, shaped

    def text(self, name: str, row: int) -> str:
        """One value as text, for an error message."""
        return self.columns[name][row].as_py().decode("utf-8", "replace")

    def floats(self, name: str, errors: RowErrors, empty: float | None) -> np.ndarray:
        """Column `name` as float64 (Python's float syntax); an empty value gives `empty`, or is
        an error when `empty` is None. Errors name the line and the value."""
        column = self.columns[name]
        blank = self.lengths(name) == 0
        values = np.full(len(column), np.nan if empty is None else empty, dtype=np.float64)
        try:  # arrow parses a subset of Python's float syntax, to the same values
            parsed = column.filter(pa.array(~blank)).view(pa.string()).cast(pa.float64())
            values[~blank] = parsed.to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = []  # rare (e.g. " 3" or "1_000"): Python's float decides, row by row
            for row in np.flatnonzero(~blank).tolist():
                try:
                    values[row] = float(self.text(name, row))
                except ValueError:
                    bad.append(row)
            errors.add(
                self.lines[bad],
                lambda i: f"{name} {self.text(name, bad[i])!r} is not a number",
            )
        if empty is None:
            errors.add(self.lines[blank], f"{name} is empty; it must be a number")
        return values


def _buffers(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets [n + 1] starting at 0, the values' bytes) of a binary column, without copies."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)
    offsets = offsets[column.offset : column.offset + len(column) + 1]
    buffer = column.buffers()[2]
    data = np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], data[offsets[0] : offsets[-1]]


def _rows_holding(offsets: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Rows (by `offsets`) holding at least one byte where `where` (over the bytes) is set."""
    return np.unique(np.searchsorted(offsets, np.flatnonzero(where), side="right") - 1)


class CsvSource:
    """One published CSV: its header checked and its lines counted on opening, its rows streamed
    by `chunks()` under the rules of the module docstring."""

    def __init__(self, path: str | Path, required: Sequence[str]):
        self.path = Path(path)
        self.header = read_header(self.path, required)
        self.count = count_lines(self.path)
        self.errors = RowErrors(self.path)
        if self.count.data_rows <= 0:
            raise ValueError(f"{self.path} has a header but no data rows")
        self._skipped: list[tuple[int, int, str]] = []  # (line, fields, text): arrow skipped
        self._unreported: list[tuple[int, int, str]] = []
        self._skipped_lines = np.zeros(0, dtype=np.int64)

    @property
    def rows(self) -> int:
        """Data rows of a well-formed file (the last line, when empty, is not one)."""
        return self.count.data_rows

    def chunks(self) -> Iterator[CsvChunk]:
        """The file's rows, block by block. After the last block, raises the errors collected
        (the caller's too), so a caller that reads to the end never returns bad data."""
        yielded = 0
        for seen, batch in self._batches():
            lines = self._line_numbers(seen, batch.num_rows)
            self._check_text(lines, batch)
            self._report_skipped()
            empty = np.logical_and.reduce([np.diff(_buffers(c)[0]) == 0 for c in batch.columns])
            # by name, the first column of each name (extra columns were checked above)
            columns = {n: batch.column(self.header.index(n)) for n in dict.fromkeys(self.header)}
            if empty.any():
                last = empty & (lines == self.count.last_line) & self.count.trailing_empty
                self.errors.add(
                    lines[empty & ~last], "empty line (only the file's last line may be empty)"
                )
                keep = pa.array(~empty)
                lines, columns = lines[~empty], {n: c.filter(keep) for n, c in columns.items()}
            if len(lines):
                yield CsvChunk(yielded, lines, columns)
                yielded += len(lines)
        self._report_skipped()
        pa.default_memory_pool().release_unused()  # arrow's pool keeps freed blocks otherwise
        if not self.errors.count and yielded != self.rows:
            raise RuntimeError(f"{self.path}: read {yielded} rows, but counted {self.rows} lines")
        self.errors.raise_if_any()

    def _batches(self) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(rows arrow produced before it, batch). Rows with the wrong number of fields are
        skipped by arrow and noted with their line (see `_line_numbers`)."""

        def skip(row) -> str:
            self._skipped.append((row.number, row.actual_columns, row.text))
            return "skip"

        names = [f"c{i}" for i in range(len(self.header))]  # header names may repeat
        reader = pa_csv.open_csv(
            self.path,
            read_options=pa_csv.ReadOptions(
                skip_rows=1, column_names=names, block_size=BLOCK_SIZE, use_threads=False
            ),  # one thread: arrow then knows the line of each skipped row
            parse_options=pa_csv.ParseOptions(
                ignore_empty_lines=False, newlines_in_values=True, invalid_row_handler=skip
            ),
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.binary())),
        )
        seen = 0
        for batch in reader:
            if self._skipped:
                lines = np.array([line for line, _, _ in self._skipped], dtype=np.int64)
                self._skipped_lines = np.concatenate([self._skipped_lines, lines])
                self._unreported += self._skipped
                self._skipped.clear()
            yield seen, batch
            seen += batch.num_rows

    def _line_numbers(self, seen: int, count: int) -> np.ndarray:
        """Lines of arrow's rows seen..seen+count-1: the k-th row arrow produced is on line
        k + 2 plus the number of skipped rows before it (the header is line 1)."""
        ordinals = np.arange(seen, seen + count)
        skipped = self._skipped_lines
        produced_before = skipped - 2 - np.arange(len(skipped))  # rows produced before each
        return ordinals + 2 + np.searchsorted(produced_before, ordinals, side="right")

    def _report_skipped(self, before: int | None = None) -> None:
        """Errors for the skipped rows noted so far (only those before line `before`)."""
        pending, self._unreported = self._unreported, []
        for line, actual, text in pending:  # in line order
            if before is not None and line >= before:
                self._unreported.append((line, actual, text))
            elif "\n" in text or "\r" in text:
                self._stop_at_line_break(line)
            else:
                self.errors.add([line], f"{actual} field(s), but the header has {len(self.header)}")

    def _check_text(self, lines: np.ndarray, batch: pa.RecordBatch) -> None:
        """UTF-8 and no line break inside a value: two byte scans per column."""
        for name, column in zip(self.header, batch.columns, strict=True):
            offsets, data = _buffers(column)
            if not data.size:
                continue
            if data.min() < 32:  # control bytes: rare, so the exact check runs rarely
                broken = _rows_holding(offsets, np.isin(data, LINE_BREAKS))
                if len(broken):
                    self._stop_at_line_break(int(lines[broken[0]]))
            if data.max() >= 0x80:
                self._check_utf8(lines, name, column, offsets, data)

    def _check_utf8(self, lines, name: str, column: pa.Array, offsets, data) -> None:
        try:
            column.cast(pa.string())  # arrow validates UTF-8 in C++
            return
        except pa.ArrowInvalid:
            pass
        bad = []
        for row in _rows_holding(offsets, data >= 0x80).tolist():  # only the non-ASCII rows
            value = column[row].as_py()
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as err:
                bad.append((row, f"byte 0x{value[err.start]:02X} at position {err.start + 1}"))
        self.errors.add(
            lines[[row for row, _ in bad]],
            lambda i: f"{name} is not UTF-8 ({bad[i][1]}); save the file as UTF-8",
        )

    def _stop_at_line_break(self, line: int) -> None:
        """A line break inside a quoted value: report it and what came before, and stop."""
        self._report_skipped(before=line)
        self.errors.add([line], "a quoted value holds a line break (one row per line)")
        self.errors.raise_if_any(f"reading stopped at line {line}: later line numbers are unknown")
