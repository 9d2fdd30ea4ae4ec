"""The tabular family's dataset: the files under `datasets/<model>/`, read into features and a
target (training.families.tabular).

The rules a data owner can rely on:

- Every `.csv` and `.parquet` object under the prefix is data. Files are read in key order and
  concatenated; they must all have the same columns (the order may differ).
- A CSV file has a header line, and every line after it as many fields as the header: a line
  with fewer or more fails the job, naming file and line. A file cut off mid-upload usually
  ends that way; when the cut keeps the field count, the last line's value cut short is caught
  where it can be told apart (see "cut short" below).
- Target: the spec's `target`, else the one column named target, label, class or y in any
  case (dropflow.vocabulary.target); with none of them, or several, the job fails listing the
  columns and the spec line to add. Never the last column by default.
- Features: the spec's `features`, else every other column, each either numeric or
  categorical, decided per column over all files:
  - categorical when the file types it so (a Parquet boolean or dictionary column) or
    when more than half of its present cells are not numbers (text such as `red`, or
    true/false in any case); numeric otherwise. So a stray word in a column of numbers is
    not a category: it fails the job, naming file, line (CSV) or row (Parquet), column and
    value. Infinite numbers, or beyond float32, fail the same way.
  - a categorical column's categories are its distinct values, sorted: booleans when every
    value is true/false, else text (a Parquet integer dictionary column keeps integers). Text
    is compared exactly, after trimming surrounding spaces: `Red` and `red` are two categories.
    More than MAX_CATEGORIES categories, or a different value in every row (an identifier or
    free text), fails the job: leave such a column out with `features:` in dropflow.yaml.
- Missing values are empty cells and NA, N/A, NaN, null or None (any case), and nulls in
  Parquet. The policy, the same in training and in serving:
  - a row with a missing target is dropped (the count is logged);
  - a missing number is filled with that feature's median over the training rows only (after
    the split, so the holdout does not leak into it). The fill is part of the exported graph:
    a client may send null for a numeric feature and gets the same fill;
  - a missing category is a category of its own, MISSING_CATEGORY (`<missing>`), listed last,
    when training saw one in that column; a client may then send null. A column that had no
    missing values in training has no such category, and serving rejects a null for it;
  - a feature column with no value at all fails the job, naming the column.
- Cut short: the last line of a CSV file with no line end after it may be what an interrupted
  upload left. A text value there that is found nowhere else in its column and begins another
  of its values (`ver`, when `versicolor` is a class) fails the job rather than becoming a
  class or category of its own, and the message about a non-number there says the file may
  have been cut off.
- Task: the spec's `task`, else classification when the target holds text or true/false, or
  whole numbers with at most 20 distinct values; regression otherwise. The classes are the
  target's distinct values, sorted, in their original type (numbers stay numbers).

`Dataset.x` holds one float32 column per feature: numbers (NaN where missing) and category
codes (the index of the value in its column's categories), exactly what the exported graph
takes (dropflow.vocabulary.card). `Dataset.card_features()` describes those columns for the
card, and `Dataset.examples()` is the whole as the job takes it (training.examples), the same
matrix, not a copy. Missing numbers stay NaN there: the network fills them itself with the
training rows' medians (training.model.build_network), so training, the holdout, the exported
graph and serving all go through that one fill.

How it reads, so that a table of millions of rows fits in little more memory than its float32
matrix: each file is fetched to a temporary file (ObjectStore.get_file) and streamed by pyarrow
twice, a CSV file in blocks of rows and a Parquet file one column of one row group at a time,
every cell handled by pyarrow's and numpy's vectorised kernels, never as a Python object. The
first pass counts, per column, the cells present, the numbers and the booleans, and notes the
first bad cell: enough to decide each column's kind, which rows have a target, and the
target's type. The second fills the matrix, allocated once with exactly the rows kept, block by
block; each block's Arrow buffers go as soon as it is written. A ReadMeter (training.reading)
hears how far each pass has got, for the job's heartbeat.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dropflow.errors import UserInputError
from dropflow.ports import ObjectStore
from dropflow.vocabulary.card import MISSING_CATEGORY, Feature, Task
from dropflow.vocabulary.datasets import MISSING_TEXT, data_files, dataset_prefix
from dropflow.vocabulary.spec import Spec
from dropflow.vocabulary.target import choose_target
from training.examples import Examples
from training.reading import ReadMeter

log = logging.getLogger(__name__)

# The spellings of a missing cell, shared with the prediction API (lower case; any case matches).
MISSING = MISSING_TEXT
# Whole numbers with at most this many distinct values are read as class labels.
MAX_INTEGER_CLASSES = 20
MAX_CLASSES = 1000
# One-hot inputs per categorical column: beyond this, a column is an identifier or free text.
MAX_CATEGORIES = 1000
# A column with a different value in each of at least this many rows is an identifier.
_IDENTIFIER_ROWS = 20
# The graph's input is float32: a larger magnitude would turn into infinity inside the model.
_FLOAT32_MAX = float(np.finfo(np.float32).max)

# pyarrow's CSV reader reads a few dozen blocks ahead, so the block size bounds that buffer; it
# is also the longest row it can parse (its default, as when a file was read as one buffer).
_CSV_BLOCK_BYTES = 1 << 20
# Rows handled at once: enough to amortise each kernel call, few enough to stay small.
_BLOCK_ROWS = 1 << 14


def _spellings(words: Iterable[str]) -> pa.Array:
    """Every upper/lower-case spelling of `words`, so that is_in needs no lower-cased copy."""
    spelt = set()
    for word in words:
        spelt.update("".join(letters) for letters in product(*({c, c.upper()} for c in word)))
    return pa.array(sorted(spelt), pa.string())


_MISSING_SPELLINGS = _spellings(MISSING)
_BOOLEAN_SPELLINGS = _spellings(("true", "false"))
# A feature cell that is a number: what pyarrow's cast to float64 reads (as pandas' to_numeric,
# which read the cells before, did). inf counts, and is refused later as not finite; `+nan`
# reads as NaN, so as no number.
_NUMBER = r"(?i)^[-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[-+]?[0-9]+)?|inf(?:inity)?|nan)$"
# A target cell that is a number: digits only (an inf or nan target is text).
_TARGET_NUMBER = r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"
_NO_TEXT = pa.scalar(None, pa.string())


@dataclass(frozen=True)
class Column:
    """How one feature is encoded in `Dataset.x`: a number, or a code into `categories`."""

    name: str
    kind: Literal["number", "category"] = "number"
    # category: the values in code order, MISSING_CATEGORY last when training saw a missing one
    categories: tuple[bool | int | str, ...] = ()

    def card_feature(self) -> Feature:
        """The card's description of this input column (see dropflow.vocabulary.card.Feature)."""
        if self.kind == "number":
            # The graph fills a missing number with the training median: null is always fine.
            return Feature(name=self.name, dtype="number", nullable=True)
        return Feature(
            name=self.name,
            dtype="category",
            categories=list(self.categories),
            nullable=MISSING_CATEGORY in self.categories,
        )


@dataclass(frozen=True)
class Dataset:
    """Features and target ready to split: one row per data row that has a target."""

    task: Task
    target: str
    features: list[str]  # the feature names, in input column order
    x: np.ndarray  # float32 [rows, features]: numbers (NaN where missing) and category codes
    y: np.ndarray  # classification: int64 class index; regression: float64
    classes: list[Any] | None  # classification: original label values, sorted
    sources: list[str]  # the keys that were read
    dropped_rows: int  # rows without a target value
    # One per feature, same order; empty means every feature is numeric.
    columns: tuple[Column, ...] = ()
    # bool per data row read (files in key order, rows in file order): whether it had a
    # target and so is a row of `x`. A family reading other columns of the same rows (text
    # beside tabular features, training.families.text) lines its rows up with these.
    kept: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    @property
    def category_counts(self) -> dict[int, int]:
        """Categorical column index -> number of categories: what build_network needs."""
        return {j: len(c.categories) for j, c in enumerate(self.columns) if c.kind == "category"}

    def card_features(self) -> list[Feature]:
        """The card's `features`: name, dtype, categories and nullability, in column order."""
        columns = self.columns or tuple(Column(name) for name in self.features)
        return [column.card_feature() for column in columns]

    def examples(self) -> Examples:
        """The rows as the job takes them: x in float32 (the graph's input; the same array
        when it is float32 already, as load_dataset makes it), the card's features, and the
        target, task and classes as read."""
        return Examples(
            task=self.task,
            target=self.target,
            x=np.asarray(self.x, dtype=np.float32),
            y=self.y,
            classes=self.classes,
            features=self.card_features(),
            sources=self.sources,
        )


# --------------------------------------------------------------------------- data files
@dataclass(frozen=True)
class _Block:
    """Rows [start, start + rows) of a file; `column(name)` reads one column of them."""

    start: int
    rows: int
    column: Callable[[str], pa.ChunkedArray]


@dataclass
class _Source:
    """One data file, fetched to local disk and read in blocks (see the subclasses)."""

    key: str
    path: Path
    size: int
    names: list[str]  # column names as the rules see them, in file order
    file_names: dict[str, str]  # name -> the column's name in the file
    rows: int = 0  # data rows (a CSV file's are counted by its first pass)
    offset: int = 0  # index of its first row among every file's rows
    header_lines: int = 0  # 1 for CSV (the header is line 1); 0 for Parquet (rows count from 1)
    # A CSV file whose last line has no line end: that line may be what an upload cut short.
    unterminated: bool = False

    def where(self, row: int) -> str:
        """Where data row `row` (0-based) is, in the terms the owner sees in the file."""
        if self.header_lines:
            return f"{self.key}, line {row + 1 + self.header_lines}"
        return f"{self.key}, row {row + 1}"

    def cut_short(self, row: int) -> bool:
        """Whether data row `row` is the last line of a file that has no line end after it:
        where an upload that stopped early leaves a value cut short."""
        return self.unterminated and row == self.rows - 1

    def blocks(self, names: list[str], meter: ReadMeter, *, first_pass: bool) -> Iterator[_Block]:
        """The file's rows in order, as blocks whose `column` reads each of `names` (the
        columns the pass reads); tells `meter` the bytes gone through (and, in the first pass,
        the rows)."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the file."""


class _CsvFile(_Source):
    """A CSV file: every cell read as text, this module deciding what is a number."""

    def blocks(self, names: list[str], meter: ReadMeter, *, first_pass: bool) -> Iterator[_Block]:
        bad_rows: list[pacsv.InvalidRow] = []

        def refuse(row: pacsv.InvalidRow) -> str:
            bad_rows.append(row)
            return "error"

        parse = pacsv.ParseOptions(
            newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=refuse
        )
        # Every column as text in the first pass, so every cell is checked to be UTF-8; the
        # second reads only the features.
        wanted = self.names if first_pass else names
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in self.file_names.values()},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            include_columns=[self.file_names[name] for name in wanted],
        )
        start = read = 0
        with pa.OSFile(str(self.path)) as file:
            try:
                with pacsv.open_csv(
                    file,
                    read_options=_csv_read_options(),
                    parse_options=parse,
                    convert_options=convert,
                ) as reader:
                    for table in _tables(reader):
                        yield _Block(start, table.num_rows, self._columns_of(table))
                        start += table.num_rows
                        # The reader reads ahead: its position runs a little before the rows.
                        position = min(file.tell(), self.size)
                        meter.advance(position - read, rows=table.num_rows if first_pass else 0)
                        read = position
            except pa.ArrowInvalid as exc:
                raise _csv_error(self.key, self.path, exc, bad_rows) from None
        meter.advance(self.size - read)
        if first_pass:
            self.rows = start

    def _columns_of(self, table: pa.Table) -> Callable[[str], pa.ChunkedArray]:
        return lambda name: table.column(self.file_names[name])


def _tables(reader: pacsv.CSVStreamingReader) -> Iterator[pa.Table]:
    """The reader's batches, gathered into tables of about _BLOCK_ROWS rows."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        pending.append(batch)
        rows += batch.num_rows
        if rows >= _BLOCK_ROWS:
            yield pa.Table.from_batches(pending)
            pending, rows = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


@dataclass
class _ParquetFile(_Source):
    """A Parquet file: read one column of one row group at a time, its types kept."""

    parquet: pq.ParquetFile | None = None

    def blocks(self, names: list[str], meter: ReadMeter, *, first_pass: bool) -> Iterator[_Block]:
        assert self.parquet is not None
        start = 0
        for group in range(self.parquet.metadata.num_row_groups):
            rows = self.parquet.metadata.row_group(group).num_rows
            # One file of a single row group is common: progress moves column by column.
            share = self.size * rows / max(1, self.rows) / max(1, len(names))

            def column(name: str, group: int = group, share: float = share) -> pa.ChunkedArray:
                read = self._column(group, name)
                meter.advance(share)
                return read

            yield _Block(start, rows, column)
            start += rows
            meter.advance(rows=rows if first_pass else 0)

    def _column(self, group: int, name: str) -> pa.ChunkedArray:
        assert self.parquet is not None
        try:
            table = self.parquet.read_row_group(group, columns=[self.file_names[name]])
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise UserInputError(f"{self.key}: not a readable Parquet file: {exc}") from None
        return table.column(0)

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()


def _csv_read_options() -> pacsv.ReadOptions:
    # One thread: threads would lose the rows' numbers (blank lines count, and stay rows of
    # empty cells so that the lines the owner sees match; a quoted value with line breaks
    # inside is one line, as it is one row).
    return pacsv.ReadOptions(use_threads=False, block_size=_CSV_BLOCK_BYTES)


def _open_csv(key: str, path: Path) -> _CsvFile:
    """The file's header, or UserInputError naming the file."""
    skip = pacsv.ParseOptions(
        newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=lambda _: "skip"
    )
    try:
        with (
            pa.OSFile(str(path)) as file,
            pacsv.open_csv(file, read_options=_csv_read_options(), parse_options=skip) as reader,
        ):
            header = list(reader.schema.names)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _csv_error(key, path, exc, []) from None
    names = [str(name).strip() for name in header]
    size = path.stat().st_size
    return _CsvFile(
        key,
        path,
        size,
        names=names,
        file_names=dict(zip(names, header, strict=True)),
        header_lines=1,
        unterminated=not _ends_with(path, size, (b"\n", b"\r")),
    )


def _open_parquet(key: str, path: Path) -> _ParquetFile:
    try:
        parquet = pq.ParquetFile(str(path))
        schema = parquet.schema_arrow
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise UserInputError(f"{key}: not a readable Parquet file: {exc}") from None
    # A pandas index saved beside the columns is not data.
    index = {
        c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)
    }
    names = [str(name) for name in schema.names if name not in index]
    source = _ParquetFile(
        key,
        path,
        path.stat().st_size,
        names=names,
        file_names={str(name): name for name in schema.names if name not in index},
        rows=parquet.metadata.num_rows,
    )
    source.parquet = parquet
    return source


def _ends_with(path: Path, size: int, endings: tuple[bytes, ...]) -> bool:
    with path.open("rb") as file:
        for ending in endings:
            if len(ending) <= size:
                file.seek(size - len(ending))
                if file.read(len(ending)) == ending:
                    return True
    return False


def _csv_error(
    key: str, path: Path, exc: Exception, bad_rows: list[pacsv.InvalidRow]
) -> UserInputError:
    """What went wrong reading a CSV file, in the owner's terms (the first problem in it)."""
    not_utf8 = _not_utf8(path)
    if not_utf8:
        return UserInputError(f"{key}, {not_utf8}")
    if bad_rows:
        return UserInputError(_wrong_field_count(key, path, bad_rows[0]))
    if "Empty CSV file" in str(exc):
        return UserInputError(f"{key}: the file is empty; expected a header line")
    return UserInputError(f"{key}: not a valid CSV file: {exc}")


def _not_utf8(path: Path) -> str | None:
    """`line N: not UTF-8 text (...)` at the file's first byte that is not UTF-8, else None.

    Only read when pyarrow has refused the file: the happy path pays nothing for it.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    with path.open("rb") as file:
        while True:
            chunk = file.read(1 << 20)
            held = len(decoder.getstate()[0])  # bytes of a character begun in the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                line = lines + chunk.count(b"\n", 0, max(0, exc.start - held))
                return f"line {line}: not UTF-8 text ({exc.reason})"
            if not chunk:
                return None
            lines += chunk.count(b"\n")


def _wrong_field_count(key: str, path: Path, row: pacsv.InvalidRow) -> str:
    """What a row with too few or too many fields means, in the owner's terms."""
    where = f"{key}, line {row.number}" if row.number is not None else key
    problem = (
        f"{where}: {row.actual_columns} field{'s' if row.actual_columns != 1 else ''}, "
        f"the header has {row.expected_columns}"
    )
    size = path.stat().st_size
    last_line = not _ends_with(path, size, (b"\n", b"\r")) and _ends_with(
        path, size, (row.text.encode(),)
    )
    if row.actual_columns < row.expected_columns and last_line:
        # The last line stops short with no line end: what an interrupted upload leaves.
        return f"{problem}; the file may have been cut off mid-upload: upload it again"
    if row.actual_columns > row.expected_columns:
        return (
            f'{problem}; a value that contains a comma must be quoted ("1,5"), '
            "and every row needs one value per column"
        )
    return f"{problem}; every row needs one value per column (leave a cell empty if missing)"


def _fetch(store: ObjectStore, model: str, folder: Path, meter: ReadMeter) -> list[_Source]:
    """Every data file under the model's prefix, in key order, fetched into `folder`, with
    the same columns.

    Raises UserInputError when there is no data file, a file's header cannot be read, a name
    appears twice, or a file's columns differ from the first file's (naming the file and the
    columns).
    """
    prefix = dataset_prefix(model)
    found = sorted(data_files(store.list(prefix)), key=lambda info: info.key)
    if not found:
        raise UserInputError(f"no .csv or .parquet files under {prefix}; drop the data there")
    for info in found:
        meter.expect(3 * info.size)  # fetched, then read twice
    sources: list[_Source] = []
    for number, info in enumerate(found):
        csv = info.key.lower().endswith(".csv")
        path = folder / f"{number}{'.csv' if csv else '.parquet'}"
        store.get_file(info.key, path)
        meter.advance(info.size)
        sources.append(_open_csv(info.key, path) if csv else _open_parquet(info.key, path))
    for source in sources:
        duplicates = sorted({c for c in source.names if source.names.count(c) > 1})
        if duplicates:
            raise UserInputError(
                f"{source.key}: column names appear twice: {', '.join(duplicates)}"
            )
    first = sources[0]
    expected = first.names
    for source in sources[1:]:
        if set(source.names) != set(expected):
            missing = [c for c in expected if c not in source.names]
            extra = [c for c in source.names if c not in expected]
            detail = []
            if missing:
                detail.append(f"missing {', '.join(map(repr, missing))}")
            if extra:
                detail.append(f"unexpected {', '.join(map(repr, extra))}")
            raise UserInputError(
                f"{source.key}: its columns differ from {first.key} ({'; '.join(detail)}); "
                "every data file of a model must have the same columns"
            )
    return sources


# --------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class _Cells:
    """One block of one column, classified."""

    raw: pa.ChunkedArray  # as read: what a message quotes
    kind: Literal["text", "bool", "integer", "number"]  # what the values are
    values: pa.ChunkedArray  # text: trimmed, null where missing; else typed (dictionaries decoded)
    missing: np.ndarray  # bool: empty, NA and the like, null
    numbers: np.ndarray  # float64: the cell's number, NaN unless it is one (always NaN for
    # a typed category: its values are categories, not numbers)
    typed_category: bool  # the file types the column as boolean or dictionary


def _cells(raw: pa.ChunkedArray, where: str) -> _Cells:
    """Classify a block of a column; `where` names the file and column for an error."""
    values = raw
    kind_of = raw.type
    typed = False
    if pa.types.is_dictionary(kind_of):
        typed, kind_of = True, kind_of.value_type
        values = raw.cast(kind_of)
    nothing = np.full(len(raw), np.nan)
    if pa.types.is_boolean(kind_of):
        missing = pc.is_null(values).to_numpy(zero_copy_only=False)
        return _Cells(raw, "bool", values, missing, nothing, True)
    if (
        pa.types.is_integer(kind_of)
        or pa.types.is_floating(kind_of)
        or pa.types.is_decimal(kind_of)
    ):
        numbers = pc.fill_null(pc.cast(values, pa.float64()), math.nan).to_numpy()
        kind: Literal["integer", "number"] = "integer" if pa.types.is_integer(kind_of) else "number"
        return _Cells(raw, kind, values, np.isnan(numbers), nothing if typed else numbers, typed)
    if not pa.types.is_string(kind_of):
        try:
            values = values.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise UserInputError(
                f"{where}: values of type {kind_of} cannot be read as text or numbers ({exc}); "
                "leave the column out by listing the wanted columns under `features:` in "
                "dropflow.yaml"
            ) from None
    text = pc.utf8_trim_whitespace(values)
    gone = pc.or_(pc.is_null(text), pc.is_in(text, value_set=_MISSING_SPELLINGS))
    text = pc.if_else(gone, _NO_TEXT, text)
    missing = gone.to_numpy(zero_copy_only=False)
    return _Cells(raw, "text", text, missing, nothing if typed else _numbers(text), typed)


def _numbers(text: pa.ChunkedArray) -> np.ndarray:
    """float64: each text cell's number, NaN where it is none (or missing)."""
    try:
        numbers = pc.cast(text, pa.float64())
    except pa.ArrowInvalid:  # some cell is no number: read only those that look like one
        looks = pc.match_substring_regex(text, _NUMBER)
        numbers = pc.cast(pc.if_else(looks, text, _NO_TEXT), pa.float64())
    return pc.fill_null(numbers, math.nan).to_numpy()


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(mask).as_py() or 0)


def _python(cells: _Cells, row: int) -> Any:
    """The cell as the file holds it (a CSV cell's text, untrimmed), for a message."""
    return cells.raw[row].as_py()


def _category_text(value: Any) -> str:
    """A value's text as a category: CSV's `3` and Parquet's 3 or 3.0 are the same `3`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- first pass
@dataclass(frozen=True)
class _BadCell:
    source: _Source
    row: int
    value: Any
    numeric: bool  # a number, but not a finite float32 one


@dataclass
class _Survey:
    """What the first pass learns of one feature column, over every file."""

    name: str
    present: int = 0
    numeric: int = 0
    boolean: int = 0  # present cells that are booleans, or true/false in any case
    integer: int = 0  # present cells of an integer-typed (Parquet) column
    typed_category: bool = False
    first_bad: _BadCell | None = None  # the first present cell that is no float32 number

    def add(self, source: _Source, start: int, cells: _Cells) -> None:
        present = ~cells.missing
        count = int(np.count_nonzero(present))
        numeric = ~np.isnan(cells.numbers)
        numbers = int(np.count_nonzero(numeric))
        self.present += count
        self.numeric += numbers
        self.typed_category |= cells.typed_category
        if cells.kind == "bool":
            self.boolean += count
        elif cells.kind == "text" and count > numbers:  # true/false is never a number
            self.boolean += _count(pc.is_in(cells.values, value_set=_BOOLEAN_SPELLINGS))
        elif cells.kind == "integer":
            self.integer += count
        if self.first_bad is None and not cells.typed_category:
            # Text, or a number float32 cannot hold (it would be infinity inside the model).
            bad = present & ~(np.abs(cells.numbers) <= _FLOAT32_MAX)
            if bad.any():
                row = int(np.argmax(bad))
                self.first_bad = _BadCell(
                    source, start + row, _python(cells, row), bool(numeric[row])
                )

    @property
    def kind(self) -> Literal["number", "category"] | None:
        """None when the column has no value at all."""
        if self.present == 0:
            return None
        if self.typed_category or 2 * (self.present - self.numeric) > self.present:
            return "category"
        return "number"

    def check_present(self) -> None:
        if self.present == 0:
            raise UserInputError(
                f"column {self.name!r} has no values: every cell is empty or marked missing; "
                f"fill it in, or {_leave_out_hint()}"
            )

    def check_numbers(self) -> None:
        """UserInputError at the first cell of this numeric column that is no usable number."""
        bad = self.first_bad
        if bad is None:
            return
        if bad.numeric:
            problem = f"is not a finite number (float32 holds magnitudes up to {_FLOAT32_MAX:.3g});"
        else:
            problem = (
                f"is not a number; the column is numeric ({self.numeric} of its {self.present} "
                "values are numbers), so"
            )
        cut = _CUT_HINT if bad.source.cut_short(bad.row) else ""
        raise UserInputError(
            f"{bad.source.where(bad.row)}, column {self.name!r}: {bad.value!r} {problem} fix the "
            f"value or leave the cell empty to mark it missing{cut}"
        )


def _leave_out_hint() -> str:
    return "leave the column out by listing the wanted columns under `features:` in dropflow.yaml"


_CUT_HINT = (
    "; it is on the file's last line, which has no line end: the file may have been cut off "
    "mid-upload, so upload it again"
)


def _survey(
    sources: list[_Source], features: list[str], target: str, meter: ReadMeter
) -> tuple[list[_Survey], _TargetColumn]:
    """The first pass: every file's rows counted, every feature surveyed, the target kept."""
    surveys = [_Survey(name) for name in features]
    target_column = _TargetColumn(target)
    for source in sources:
        for block in source.blocks([*features, target], meter, first_pass=True):
            for survey in surveys:
                where = f"{source.key}, column {survey.name!r}"
                survey.add(source, block.start, _cells(block.column(survey.name), where))
            target_column.add(source, block.start, block.column(target))
    offset = 0
    for source in sources:
        source.offset = offset
        offset += source.rows
    return surveys, target_column


def _first_problem(surveys: list[_Survey]) -> None:
    """Raise the first feature problem the first pass can tell, column by column in order,
    up to the first categorical column: its checks need the second pass (_finish)."""
    for survey in surveys:
        survey.check_present()
        if survey.kind == "category":
            return
        survey.check_numbers()


def _finish(survey: _Survey, coder: _Categories | None, column: np.ndarray, rows: int) -> Column:
    """The column's checks after the second pass (UserInputError at its first problem), its
    final codes written into `column`, and its Column."""
    survey.check_present()
    if coder is not None:
        finished = coder.finish(column)
        log.info("column %r is categorical: %d categories", survey.name, len(finished.categories))
        return finished
    survey.check_numbers()
    if rows > survey.present:
        log.info(
            "column %r: %d missing values are filled with the training median",
            survey.name,
            rows - survey.present,
        )
    return Column(survey.name)


# --------------------------------------------------------------------------- second pass
class _Categories:
    """Codes one categorical column in the second pass, then checks and sorts its categories.

    Codes are first given in order of appearance; `finish` sorts the categories and rewrites
    the column. Past MAX_CATEGORIES the column is only counted, never coded: it is refused.
    """

    def __init__(self, survey: _Survey) -> None:
        self.survey = survey
        # Booleans when every value is true/false; integers when a Parquet file typed them all.
        self.regime: Literal["bool", "integer", "text"] = (
            "bool"
            if survey.boolean == survey.present
            else "integer"
            if survey.integer == survey.present
            else "text"
        )
        self.keys: list[str] = []  # distinct values in order of appearance
        self.index: dict[str, int] = {}
        self.value_set = pa.array([], pa.string())
        self.counts = np.zeros(0, np.int64)
        # Once there are too many to code: each block's distinct values and their counts.
        self.uncoded: list[pa.StructArray] = []
        self.missing = False
        self.last_rows: list[tuple[_Source, int, str | None]] = []  # unterminated files' last rows

    def code(self, cells: _Cells, source: _Source, block: _Block) -> np.ndarray:
        """float32 provisional codes of the block's rows (-1 where missing)."""
        keys = self._keys(cells)
        self.missing |= bool(cells.missing.any())
        if source.unterminated and block.rows and block.start + block.rows == source.rows:
            self.last_rows.append((source, source.rows - 1, keys[len(keys) - 1].as_py()))
        if self.uncoded:
            self.uncoded.append(pc.value_counts(keys))
            return np.zeros(len(keys), np.float32)
        distinct = pc.unique(keys)
        new = [k for k in distinct.to_pylist() if k is not None and k not in self.index]
        if len(self.keys) + len(new) > MAX_CATEGORIES:
            # The column will be refused (finish): from here on its values are only counted.
            self.uncoded.append(pc.value_counts(keys))
            return np.zeros(len(keys), np.float32)
        if new:
            for key in new:
                self.index[key] = len(self.keys)
                self.keys.append(key)
            self.value_set = pa.array(self.keys, pa.string())
        codes = pc.fill_null(pc.index_in(keys, value_set=self.value_set), -1).to_numpy()
        found = np.bincount(codes[codes >= 0], minlength=len(self.keys))
        self.counts = np.concatenate(
            [self.counts, np.zeros(len(found) - len(self.counts), np.int64)]
        )
        self.counts += found
        return codes.astype(np.float32)

    def _keys(self, cells: _Cells) -> pa.ChunkedArray:
        """The block's values as text keys, null where missing."""
        if cells.kind == "text":
            return pc.utf8_lower(cells.values) if self.regime == "bool" else cells.values
        if self.regime != "text" or cells.kind == "integer":
            keys = pc.cast(cells.values, pa.string())  # booleans as true/false, integers as digits
        else:
            # Booleans, floats: through Python's own text of each distinct value (True, 2.5).
            distinct = pc.unique(cells.values)
            texts = pa.array(
                [None if v is None else _category_text(v) for v in distinct.to_pylist()],
                pa.string(),
            )
            keys = pc.take(texts, pc.index_in(cells.values, value_set=distinct))
        return pc.if_else(pa.array(cells.missing), _NO_TEXT, keys)

    def _value(self, key: str) -> bool | int | str:
        if self.regime == "bool":
            return key == "true"
        if self.regime == "integer":
            return int(key)
        return key

    def finish(self, column: np.ndarray) -> Column:
        """Check the categories (module rules) and turn `column`'s provisional codes into
        codes of the sorted categories; UserInputError when the column is unusable."""
        name, present = self.survey.name, self.survey.present
        seen, counts = pa.array(self.keys, pa.string()), pa.array(self.counts, pa.int64())
        if self.uncoded:
            tally = pa.table(
                {
                    "value": pa.chunked_array([seen, *(vc.field("values") for vc in self.uncoded)]),
                    "count": pa.chunked_array(
                        [counts, *(vc.field("counts") for vc in self.uncoded)]
                    ),
                }
            )
            tally = (
                tally.filter(pc.is_valid(tally["value"]))
                .group_by("value")
                .aggregate([("count", "sum")])
            )
            seen, counts = tally["value"].combine_chunks(), tally["count_sum"].combine_chunks()
        self._check_not_cut(seen, counts)
        distinct = len(seen)
        if distinct > MAX_CATEGORIES:
            raise UserInputError(
                f"column {name!r} has {distinct} distinct values, more than the "
                f"{MAX_CATEGORIES} categories a feature may have; {_leave_out_hint()}"
            )
        if distinct == present >= _IDENTIFIER_ROWS:
            raise UserInputError(
                f"column {name!r} has a different value in each of its {present} rows (an "
                f"identifier or free text?), so nothing can be learnt from it; {_leave_out_hint()}"
            )
        values = [self._value(key) for key in self.keys]
        categories: list[Any] = sorted(values)
        if self.missing:
            if MISSING_CATEGORY in categories:
                # A real value spelled like the reserved one: the two could not be told apart.
                raise UserInputError(
                    f"column {name!r} has missing values and also the value "
                    f"{MISSING_CATEGORY!r}, which dropflow reserves for missing categories; "
                    "rename that value"
                )
            categories.append(MISSING_CATEGORY)
        position = {value: code for code, value in enumerate(categories)}
        # Provisional code -> final code; the last entry is where -1 (missing) lands.
        final = np.array(
            [position[v] for v in values] + [position.get(MISSING_CATEGORY, -1)], np.float32
        )
        column[:] = final[column.astype(np.intp)]
        return Column(name, "category", tuple(categories))

    def _check_not_cut(self, seen: pa.Array, counts: pa.Array) -> None:
        """UserInputError when an unterminated last line (_Source.cut_short) holds a text
        value found nowhere else (`counts` of each of the `seen` values) that begins another
        of the column's values."""
        if self.regime != "text":
            return
        for source, row, key in self.last_rows:
            if key is None or counts[pc.index(seen, key).as_py()].as_py() != 1:
                continue
            starts = pc.starts_with(seen, pattern=key)
            longer = sorted(v for v in pc.filter(seen, starts).to_pylist() if v != key)
            if longer:
                raise _cut_error(source, row, self.survey.name, key, longer)


def _cut_error(
    source: _Source, row: int, name: str, value: str, longer: list[str]
) -> UserInputError:
    return UserInputError(
        f"{source.where(row)}, column {name!r}: {value!r} appears nowhere else and begins "
        f"{_some(longer)}{_CUT_HINT}"
    )


def _some(values: list[str], shown: int = 3) -> str:
    listed = " or ".join(repr(v) for v in values[:shown])
    return listed if len(values) <= shown else f"{listed} (and {len(values) - shown} more)"


def _fill(
    sources: list[_Source], surveys: list[_Survey], keep: np.ndarray, meter: ReadMeter
) -> tuple[np.ndarray, list[_Categories | None]]:
    """The second pass: x [rows kept, features] float32, allocated once and filled block by
    block (categories in provisional codes, see _Categories), and each column's coder."""
    coders = [_Categories(s) if s.kind == "category" else None for s in surveys]
    names = [survey.name for survey in surveys]
    x = np.empty((int(np.count_nonzero(keep)), len(surveys)), np.float32)
    row = 0
    # A number beyond float32 becomes inf here; its column is refused after the pass.
    with np.errstate(over="ignore"):
        for source in sources:
            for block in source.blocks(names, meter, first_pass=False):
                first = source.offset + block.start
                kept = keep[first : first + block.rows]
                rows = int(np.count_nonzero(kept))
                for j, (name, coder) in enumerate(zip(names, coders, strict=True)):
                    cells = _cells(block.column(name), f"{source.key}, column {name!r}")
                    values = cells.numbers if coder is None else coder.code(cells, source, block)
                    x[row : row + rows, j] = values if rows == block.rows else values[kept]
                row += rows
    return x, coders


# --------------------------------------------------------------------------- target
@dataclass(frozen=True)
class _TargetBlock:
    source: _Source
    start: int
    cells: _Cells
    present: np.ndarray  # bool
    boolean: np.ndarray  # bool: a boolean, or true/false in any case
    numbers: np.ndarray  # float64: the finite number a cell holds, NaN unless one

    def texts(self) -> pa.ChunkedArray:
        """The cells as text, null where missing (a Parquet typed value in Python's words)."""
        if self.cells.kind == "text":
            return self.cells.values
        return pa.chunked_array(
            [
                pa.array(
                    [
                        str(v) if keep else None
                        for v, keep in zip(self.cells.values.to_pylist(), self.present, strict=True)
                    ],
                    pa.string(),
                )
            ]
        )

    def truths(self) -> np.ndarray:
        """bool: which cells are true (for a boolean target)."""
        if self.cells.kind == "bool":
            return pc.fill_null(self.cells.values, False).to_numpy(zero_copy_only=False)
        lowered = pc.utf8_lower(self.cells.values)
        return pc.fill_null(pc.equal(lowered, "true"), False).to_numpy(zero_copy_only=False)


class _TargetColumn:
    """The target's cells, kept from the first pass (one column: small beside the features),
    and their interpretation by the module's rules."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.blocks: list[_TargetBlock] = []

    def add(self, source: _Source, start: int, raw: pa.ChunkedArray) -> None:
        cells = _cells(raw, f"{source.key}, column {self.name!r}")
        present = ~cells.missing
        if cells.kind == "text":
            boolean = pc.is_in(cells.values, value_set=_BOOLEAN_SPELLINGS).to_numpy(
                zero_copy_only=False
            )
            looks = pc.match_substring_regex(cells.values, _TARGET_NUMBER)
            numbers = pc.cast(pc.if_else(looks, cells.values, _NO_TEXT), pa.float64())
            numbers = pc.fill_null(numbers, math.nan).to_numpy()
        elif cells.kind == "bool":
            boolean, numbers = present.copy(), np.full(len(present), np.nan)
        else:
            boolean = np.zeros(len(present), bool)
            numbers = pc.fill_null(pc.cast(cells.values, pa.float64()), math.nan).to_numpy()
            present &= ~np.isnan(numbers)  # a float NaN is missing
        numbers = np.where(np.isfinite(numbers), numbers, np.nan)  # inf is no number here
        self.blocks.append(_TargetBlock(source, start, cells, present, boolean, numbers))

    @property
    def present(self) -> np.ndarray:
        """bool over every row of every file: which rows have a target (the rows kept)."""
        return _joined([b.present for b in self.blocks], bool)

    def interpret(self, spec: Spec) -> tuple[Task, np.ndarray, list[Any] | None]:
        """(task, y of the rows kept, classes), or UserInputError naming the problem."""
        present = self.present
        count = int(np.count_nonzero(present))
        numbers = _joined([b.numbers for b in self.blocks], float)
        if count and np.count_nonzero(_joined([b.boolean for b in self.blocks], bool)) == count:
            kind = "bool"
        elif count and np.count_nonzero(present & ~np.isnan(numbers)) == count:
            whole = numbers[present]
            kind = "int" if bool(np.all(whole == np.floor(whole))) else "float"
        else:
            kind = "str"
        task: Task
        if spec.task is not None:
            task = spec.task
        elif kind == "int" and len(np.unique(numbers[present])) <= MAX_INTEGER_CLASSES:
            task = "classification"
        else:
            task = "regression" if kind in ("int", "float") else "classification"
        if not count:
            raise UserInputError(f"target column {self.name!r} has no values")
        if task == "regression":
            if kind not in ("int", "float"):
                self._not_a_number(present & np.isnan(numbers))
            return task, numbers[present], None
        if kind == "bool":
            truths = _joined([b.truths() for b in self.blocks], bool)[present]
            classes: list[Any] = sorted({bool(v) for v in np.unique(truths)})
            y = truths.astype(np.int64) if classes == [False, True] else np.zeros(count, np.int64)
        elif kind in ("int", "float"):
            distinct, y = np.unique(numbers[present], return_inverse=True)
            classes = [int(v) if kind == "int" else float(v) for v in distinct]
        else:
            y, classes = self._text_classes()
            return task, y, classes
        self._check_classes(classes)
        return task, y.astype(np.int64), classes

    def _text_classes(self) -> tuple[np.ndarray, list[Any]]:
        """y and the classes of a text target (a classification)."""
        texts = pa.chunked_array(
            [chunk for block in self.blocks for chunk in block.texts().chunks], pa.string()
        )
        distinct = pc.unique(pc.drop_null(texts))
        self._check_not_cut(texts, distinct)
        if len(distinct) > MAX_CLASSES:
            self._check_classes([None] * len(distinct))  # refused: the count is what it says
        classes: list[Any] = sorted(distinct.to_pylist())
        self._check_classes(classes)
        codes = pc.index_in(pc.drop_null(texts), value_set=pa.array(classes, pa.string()))
        return codes.to_numpy().astype(np.int64), classes

    def _check_not_cut(self, texts: pa.ChunkedArray, distinct: pa.Array) -> None:
        """UserInputError when an unterminated last line's class is found nowhere else and
        begins another class (see the module's rules: cut short)."""
        for block in self.blocks:
            source, rows = block.source, len(block.present)
            last = block.start + rows - 1
            if not (rows and source.cut_short(last) and block.present[-1]):
                continue
            value = block.texts()[rows - 1].as_py()
            if _count(pc.equal(texts, value)) != 1:
                continue
            longer = sorted(
                v
                for v in pc.filter(distinct, pc.starts_with(distinct, pattern=value)).to_pylist()
                if v != value
            )
            if longer:
                raise _cut_error(source, last, self.name, value, longer)

    def _check_classes(self, classes: list[Any]) -> None:
        if len(classes) < 2:
            raise UserInputError(
                f"target column {self.name!r} has a single value ({classes[0]!r}); "
                "a classifier needs at least two classes"
            )
        if len(classes) > MAX_CLASSES:
            raise UserInputError(
                f"target column {self.name!r} has {len(classes)} distinct values, more than "
                f"{MAX_CLASSES} classes; set `task: regression` or choose another target"
            )

    def _not_a_number(self, wrong: np.ndarray) -> None:
        row = int(np.argmax(wrong))
        for block in self.blocks:
            if row < len(block.present):
                raise UserInputError(
                    f"{block.source.where(block.start + row)}, column {self.name!r}: "
                    f"{_python(block.cells, row)!r} is not a number; a regression target "
                    "must be numeric"
                )
            row -= len(block.present)


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


# --------------------------------------------------------------------------- columns
def choose_features(columns: list[str], target: str, spec: Spec) -> list[str]:
    """The spec's features, else every column but the target, in file order."""
    if spec.features is None:
        features = [c for c in columns if c != target]
    else:
        unknown = [f for f in spec.features if f not in columns]
        if unknown:
            raise UserInputError(
                f"feature column {unknown[0]!r} (from dropflow.yaml) not found; "
                f"available columns: {', '.join(columns)}"
            )
        if target in spec.features:
            raise UserInputError(f"column {target!r} is the target; remove it from features")
        features = list(spec.features)
    if not features:
        raise UserInputError(
            f"no feature columns: the data has only the target {target!r} "
            "(is the file comma-separated, with a header line?)"
        )
    return features


def load_dataset(
    store: ObjectStore, model: str, spec: Spec, *, meter: ReadMeter | None = None
) -> Dataset:
    """Read the model's data files and turn them into a Dataset, per the module's rules.

    `meter` hears how far the read has got (training.reading). Raises UserInputError naming
    the file, line and column of the first problem found.
    """
    meter = meter or ReadMeter()
    with (
        tempfile.TemporaryDirectory(prefix="dropflow-data-") as folder,
        contextlib.ExitStack() as opened,
    ):
        sources = _fetch(store, model, Path(folder), meter)
        for source in sources:
            opened.callback(source.close)
        columns = sources[0].names
        target_name = choose_target(columns, spec.target, model=model)
        features = choose_features(columns, target_name, spec)
        surveys, target = _survey(sources, features, target_name, meter)
        _first_problem(surveys)
        pending = any(survey.kind == "category" for survey in surveys)
        # A bad target is told after the features, as the rules check them; before the second
        # pass when no categorical column's checks still wait for it.
        outcome = None if pending else target.interpret(spec)
        keep = target.present
        x, coders = _fill(sources, surveys, keep, meter)
        feature_columns = [
            _finish(survey, coder, x[:, j], rows=len(keep))
            for j, (survey, coder) in enumerate(zip(surveys, coders, strict=True))
        ]
        task, y, classes = outcome or target.interpret(spec)
    # Arrow's allocator keeps freed blocks for reuse: give them back before training starts.
    pa.default_memory_pool().release_unused()
    dropped = int(len(keep) - np.count_nonzero(keep))
    if dropped:
        log.info("dropped %d rows without a value in target column %r", dropped, target_name)
    return Dataset(
        task=task,
        target=target_name,
        features=features,
        x=x,
        y=y,
        classes=classes,
        sources=[source.key for source in sources],
        dropped_rows=dropped,
        columns=tuple(feature_columns),
        kept=keep,
    )
