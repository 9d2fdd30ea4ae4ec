"""The tabular family's dataset: the files under `datasets/<model>/`, read into features and a
target (training.families.tabular).

The rules a data owner can rely on:

- Every `.csv` and `.parquet` object under the prefix is data. Files are read in key order and
  concatenated; they must all have the same columns (the order may differ).
- A CSV file has a header line, and every line after it as many fields as the header: a line
  with fewer or more fails the job, naming file and line. A file cut off mid-upload usually
  ends that way; when the cut keeps the field count, the last line's value cut short is caught
  where it can be told apart (see "cut short" below).
- Target: the spec's `target`, else a column named `target`, else the last column.
- Features: the spec's `features`, else every other column, each either numeric or
  categorical, decided per column over all files:
  - categorical when the file types it so (a Parquet boolean or dictionary/category column) or
    when more than half of its present cells are not numbers (text such as `red`, or
    true/false in any case); numeric otherwise. So a stray word in a column of numbers is
    not a category: it fails the job, naming file, line (CSV) or row (Parquet), column and
    value. Infinite numbers, or beyond float32, fail the same way.
  - a categorical column's categories are its distinct values, sorted: booleans when every
    value is true/false, else text (a Parquet integer category column keeps integers). Text
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

`Dataset.x` holds one float column per feature: numbers (NaN where missing) and category codes
(the index of the value in its column's categories), exactly what the exported graph takes
(dropflow.vocabulary.card). `Dataset.card_features()` describes those columns for the card, and
`Dataset.examples()` is the whole as the job takes it (training.examples), in float32. Missing
numbers stay NaN there: the network fills them itself with the training rows' medians
(training.model.build_network), so training, the holdout, the exported graph and serving all
go through that one fill.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from dropflow.errors import UserInputError
from dropflow.ports import ObjectStore
from dropflow.vocabulary.card import MISSING_CATEGORY, Feature, Task
from dropflow.vocabulary.datasets import data_files, dataset_prefix
from dropflow.vocabulary.spec import Spec
from training.examples import Examples

log = logging.getLogger(__name__)

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})
# Whole numbers with at most this many distinct values are read as class labels.
MAX_INTEGER_CLASSES = 20
MAX_CLASSES = 1000
# One-hot inputs per categorical column: beyond this, a column is an identifier or free text.
MAX_CATEGORIES = 1000
# A column with a different value in each of at least this many rows is an identifier.
_IDENTIFIER_ROWS = 20
# The graph's input is float32: a larger magnitude would turn into infinity inside the model.
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_INTEGER = re.compile(r"[-+]?\d+")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True)
class Table:
    """One data file as read: CSV cells are strings, Parquet columns keep their types."""

    key: str
    frame: pd.DataFrame
    header_lines: int  # 1 for CSV (the header is line 1); 0 for Parquet (rows count from 1)
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
        return self.unterminated and row == len(self.frame) - 1


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
    x: np.ndarray  # float64 [rows, features]: numbers (NaN where missing) and category codes
    y: np.ndarray  # classification: int64 class index; regression: float64
    classes: list[Any] | None  # classification: original label values, sorted
    sources: list[str]  # the keys that were read
    dropped_rows: int  # rows without a target value
    # One per feature, same order; empty means every feature is numeric.
    columns: tuple[Column, ...] = ()

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
        """The rows as the job takes them: x in float32 (the graph's input), the card's
        features, and the target, task and classes as read."""
        return Examples(
            task=self.task,
            target=self.target,
            x=self.x.astype(np.float32),
            y=self.y,
            classes=self.classes,
            features=self.card_features(),
            sources=self.sources,
        )


# --------------------------------------------------------------------------- reading files
def _read_csv(key: str, data: bytes) -> Table:
    """A CSV file's cells as text, or UserInputError naming the file (and the line at fault).

    pyarrow parses it, one thread, so that a row with the wrong number of fields is reported
    with its line number (the header is line 1; blank lines count, and stay as rows of empty
    cells so that the lines the owner sees match; a quoted value with line breaks inside is
    one line, as it is one row).
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserInputError(f"{key}, line {line}: not UTF-8 text ({exc.reason})") from None
    bad_rows: list[pacsv.InvalidRow] = []

    def refuse(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "error"

    parse = pacsv.ParseOptions(
        newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=refuse
    )
    read = pacsv.ReadOptions(use_threads=False)  # threads would lose the rows' numbers
    try:
        names = _csv_names(data, read)
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=read,
            parse_options=parse,
            # Every cell as text: this module decides what is a number and what is missing.
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        if bad_rows:
            raise UserInputError(_wrong_field_count(key, data, bad_rows[0])) from None
        if "Empty CSV file" in str(exc):
            raise UserInputError(f"{key}: the file is empty; expected a header line") from None
        raise UserInputError(f"{key}: not a valid CSV file: {exc}") from None
    frame = table.to_pandas()
    frame.columns = [str(name).strip() for name in frame.columns]
    return Table(key, frame, header_lines=1, unterminated=not data.endswith((b"\n", b"\r")))


def _csv_names(data: bytes, read: pacsv.ReadOptions) -> list[str]:
    """The header's column names, as pyarrow reads them (from the file's first block)."""
    skip = pacsv.ParseOptions(
        newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=lambda _: "skip"
    )
    with pacsv.open_csv(io.BytesIO(data), read_options=read, parse_options=skip) as reader:
        return list(reader.schema.names)


def _wrong_field_count(key: str, data: bytes, row: pacsv.InvalidRow) -> str:
    """What a row with too few or too many fields means, in the owner's terms."""
    where = f"{key}, line {row.number}" if row.number is not None else key
    problem = (
        f"{where}: {row.actual_columns} field{'s' if row.actual_columns != 1 else ''}, "
        f"the header has {row.expected_columns}"
    )
    last_line = not data.endswith((b"\n", b"\r")) and data.endswith(row.text.encode())
    if row.actual_columns < row.expected_columns and last_line:
        # The last line stops short with no line end: what an interrupted upload leaves.
        return f"{problem}; the file may have been cut off mid-upload: upload it again"
    if row.actual_columns > row.expected_columns:
        return (
            f'{problem}; a value that contains a comma must be quoted ("1,5"), '
            "and every row needs one value per column"
        )
    return f"{problem}; every row needs one value per column (leave a cell empty if missing)"


def _read_parquet(key: str, data: bytes) -> Table:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise UserInputError(f"{key}: not a readable Parquet file: {exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    return Table(key, frame.reset_index(drop=True), header_lines=0)


def read_tables(store: ObjectStore, model: str) -> list[Table]:
    """Every data file under the model's prefix, in key order, with the same columns.

    Raises UserInputError when there is no data file, a file cannot be read, or a file's
    columns differ from the first file's (naming the file and the columns).
    """
    prefix = dataset_prefix(model)
    keys = [i.key for i in data_files(store.list(prefix))]
    if not keys:
        raise UserInputError(f"no .csv or .parquet files under {prefix}; drop the data there")
    tables = []
    for key in sorted(keys):
        data = store.get(key)
        reader = _read_csv if key.lower().endswith(".csv") else _read_parquet
        tables.append(reader(key, data))
    for table in tables:
        names = list(table.frame.columns)
        duplicates = sorted({c for c in names if names.count(c) > 1})
        if duplicates:
            raise UserInputError(f"{table.key}: column names appear twice: {', '.join(duplicates)}")
    first = tables[0]
    expected = list(first.frame.columns)
    for table in tables[1:]:
        columns = list(table.frame.columns)
        if set(columns) != set(expected):
            missing = [c for c in expected if c not in columns]
            extra = [c for c in columns if c not in expected]
            detail = []
            if missing:
                detail.append(f"missing {', '.join(map(repr, missing))}")
            if extra:
                detail.append(f"unexpected {', '.join(map(repr, extra))}")
            raise UserInputError(
                f"{table.key}: its columns differ from {first.key} ({'; '.join(detail)}); "
                "every data file of a model must have the same columns"
            )
    return tables


# --------------------------------------------------------------------------- cell parsing
@dataclass(frozen=True)
class _Cells:
    """One file's cells of one feature column, classified."""

    table: Table
    name: str
    numbers: np.ndarray  # float64: the cell's number, NaN unless it is one
    missing: np.ndarray  # bool: empty, NA and the like
    numeric: np.ndarray  # bool: present and a number (finite or not)
    typed_category: bool  # the file itself types the column as boolean or category

    @property
    def present(self) -> np.ndarray:
        return ~self.missing

    def values(self) -> list[Any]:
        """The cells as plain Python values: None (missing), bool, int, float or str."""
        column = self.table.frame[self.name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(object)
        return [None if gone else _cell(v) for v, gone in zip(column, self.missing, strict=True)]


def _classify(table: Table, name: str) -> _Cells:
    column = table.frame[name]
    if is_bool_dtype(column) or isinstance(column.dtype, pd.CategoricalDtype):
        missing = np.array([_cell(v) is None for v in column], dtype=bool)
        nothing = np.full(len(column), np.nan)
        return _Cells(table, name, nothing, missing, np.zeros(len(column), bool), True)
    if is_numeric_dtype(column):
        numbers = column.to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(numbers)
        return _Cells(table, name, numbers, missing, ~missing, False)
    # Text (every CSV cell, Parquet strings and objects): judged by what the cell says.
    text = column.map(_text).astype(object)
    missing = text.map(lambda t: t.lower() in MISSING).to_numpy(dtype=bool)
    numbers = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(dtype=float)
    # to_numeric reads "inf" as a number (rejected later as not finite) and nothing else as NaN.
    numeric = ~missing & ~np.isnan(numbers)
    return _Cells(table, name, np.where(numeric, numbers, np.nan), missing, numeric, False)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip()


def _cell(value: Any) -> Any:
    """A cell as a plain Python value: None (missing), bool, int, float or str (trimmed)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    text = str(value).strip()
    return None if text.lower() in MISSING else text


def _as_number(value: Any) -> int | float | None:
    """The number a target cell means, or None when it is not one (booleans are not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        if _INTEGER.fullmatch(value):
            return int(value)
        if _DECIMAL.fullmatch(value):
            number = float(value)
            return number if math.isfinite(number) else None
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _BOOLEANS.get(value.lower())
    return None


def interpret_target(values: list[Any]) -> tuple[str, list[Any]]:
    """Give a target column one type: ("bool" | "int" | "float" | "str", converted values).

    `values` are plain cells (None for missing). Whole-valued floats such as 1.0 count as
    integers, so `1` in one file and `1.0` in another are the same class.
    """
    present = [v for v in values if v is not None]
    bools = [_as_bool(v) for v in present]
    if present and all(b is not None for b in bools):
        return "bool", [None if v is None else _as_bool(v) for v in values]
    numbers = [_as_number(v) for v in present]
    if present and all(n is not None for n in numbers):
        if all(float(n).is_integer() for n in numbers):  # type: ignore[arg-type]
            return "int", [None if v is None else int(_as_number(v)) for v in values]  # type: ignore[arg-type]
        return "float", [None if v is None else float(_as_number(v)) for v in values]  # type: ignore[arg-type]
    return "str", [None if v is None else str(v) for v in values]


def infer_task(kind: str, values: list[Any]) -> Task:
    """classification for text and booleans, or integers with few distinct values."""
    if kind in ("bool", "str"):
        return "classification"
    if kind == "int" and len({v for v in values if v is not None}) <= MAX_INTEGER_CLASSES:
        return "classification"
    return "regression"


# --------------------------------------------------------------------------- columns
def choose_target(columns: list[str], spec: Spec) -> str:
    """The spec's target, else `target`, else the last column; UserInputError if unknown."""
    if spec.target is not None:
        if spec.target not in columns:
            raise UserInputError(
                f"target column {spec.target!r} (from dropflow.yaml) not found; "
                f"available columns: {', '.join(columns)}"
            )
        return spec.target
    return "target" if "target" in columns else columns[-1]


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


def _first(cells: list[_Cells], mask_of: Any) -> tuple[_Cells, int] | None:
    """The first cell (in file order) where `mask_of(cells)` is true, as (cells, row)."""
    for part in cells:
        mask = mask_of(part)
        if mask.any():
            return part, int(np.argmax(mask))
    return None


def _leave_out_hint() -> str:
    return "leave the column out by listing the wanted columns under `features:` in dropflow.yaml"


def _numeric_column(name: str, cells: list[_Cells], present: int) -> np.ndarray:
    """The column's numbers (NaN where missing), or UserInputError at its first bad cell."""

    def bad(part: _Cells) -> np.ndarray:
        # Text, or a number float32 cannot hold (it would be infinity inside the model).
        return part.present & ~(np.abs(part.numbers) <= _FLOAT32_MAX)

    found = _first(cells, bad)
    if found is None:
        return np.concatenate([part.numbers for part in cells])
    part, row = found
    value = part.table.frame[name].iloc[row]
    if part.numeric[row]:
        problem = f"is not a finite number (float32 holds magnitudes up to {_FLOAT32_MAX:.3g});"
    else:
        numbers = sum(int(p.numeric.sum()) for p in cells)
        problem = (
            f"is not a number; the column is numeric ({numbers} of its {present} values are "
            "numbers), so"
        )
    cut = _CUT_HINT if part.table.cut_short(row) else ""
    raise UserInputError(
        f"{part.table.where(row)}, column {name!r}: {value!r} {problem} fix the value or leave "
        f"the cell empty to mark it missing{cut}"
    )


_CUT_HINT = (
    "; it is on the file's last line, which has no line end: the file may have been cut off "
    "mid-upload, so upload it again"
)


def _check_not_cut(tables: list[Table], name: str, values: list[Any]) -> None:
    """UserInputError when a file's unterminated last line (Table.cut_short) holds, in column
    `name`, a text value found nowhere else that begins another of the column's values: the
    `ver` an upload cut short of `versicolor` would otherwise become a class or category.

    `values` are the column's cells over all `tables`, in order, as the column reads them.
    """
    counts = Counter(v for v in values if isinstance(v, str))
    start = 0
    for table in tables:
        last = start + len(table.frame) - 1
        value = values[last] if last >= start else None
        if table.cut_short(last - start) and isinstance(value, str) and counts[value] == 1:
            longer = sorted(v for v in counts if v != value and v.startswith(value))
            if longer:
                raise UserInputError(
                    f"{table.where(last - start)}, column {name!r}: {value!r} appears nowhere "
                    f"else and begins {_some(longer)}{_CUT_HINT}"
                )
        start = last + 1


def _some(values: list[str], shown: int = 3) -> str:
    listed = " or ".join(repr(v) for v in values[:shown])
    return listed if len(values) <= shown else f"{listed} (and {len(values) - shown} more)"


def _category_values(values: list[Any]) -> list[bool | int | str | None]:
    """Give a categorical column's present values one type: bool, int or (usually) str."""
    present = [v for v in values if v is not None]
    if all(_as_bool(v) is not None for v in present):
        return [None if v is None else _as_bool(v) for v in values]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return values  # integers the file typed as categories (a Parquet dictionary column)
    return [None if v is None else _category_text(v) for v in values]


def _category_text(value: Any) -> str:
    """A value's text as a category: CSV's `3` and Parquet's 3 or 3.0 are the same `3`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _categorical_column(name: str, cells: list[_Cells], present: int) -> tuple[np.ndarray, Column]:
    """The column's category codes and its Column, or UserInputError when it is unusable."""
    values = _category_values([v for part in cells for v in part.values()])
    _check_not_cut([part.table for part in cells], name, values)
    categories: list[Any] = sorted({v for v in values if v is not None})
    if len(categories) > MAX_CATEGORIES:
        raise UserInputError(
            f"column {name!r} has {len(categories)} distinct values, more than the "
            f"{MAX_CATEGORIES} categories a feature may have; {_leave_out_hint()}"
        )
    if len(categories) == present >= _IDENTIFIER_ROWS:
        raise UserInputError(
            f"column {name!r} has a different value in each of its {present} rows (an "
            f"identifier or free text?), so nothing can be learnt from it; {_leave_out_hint()}"
        )
    if any(v is None for v in values):
        if MISSING_CATEGORY in categories:
            # A real value spelled like the reserved one: the two could not be told apart.
            raise UserInputError(
                f"column {name!r} has missing values and also the value {MISSING_CATEGORY!r}, "
                "which dropflow reserves for missing categories; rename that value"
            )
        categories.append(MISSING_CATEGORY)
    index = {(type(c), c): i for i, c in enumerate(categories)}
    codes = np.array(
        [index[(str, MISSING_CATEGORY) if v is None else (type(v), v)] for v in values],
        dtype=np.float64,
    )
    return codes, Column(name, "category", tuple(categories))


def _feature_matrix(tables: list[Table], features: list[str]) -> tuple[np.ndarray, list[Column]]:
    """x [rows, features] and one Column per feature, by the module's rules."""
    blocks: list[np.ndarray] = []
    columns: list[Column] = []
    for name in features:
        cells = [_classify(table, name) for table in tables]
        present = sum(int(part.present.sum()) for part in cells)
        if present == 0:
            raise UserInputError(
                f"column {name!r} has no values: every cell is empty or marked missing; "
                f"fill it in, or {_leave_out_hint()}"
            )
        non_numeric = present - sum(int(part.numeric.sum()) for part in cells)
        if any(part.typed_category for part in cells) or 2 * non_numeric > present:
            values, column = _categorical_column(name, cells, present)
            log.info("column %r is categorical: %d categories", name, len(column.categories))
        else:
            values, column = _numeric_column(name, cells, present), Column(name)
            missing = len(values) - present
            if missing:
                log.info(
                    "column %r: %d missing values are filled with the training median",
                    name,
                    missing,
                )
        blocks.append(values)
        columns.append(column)
    rows = sum(len(table.frame) for table in tables)
    x = np.column_stack(blocks) if blocks else np.empty((rows, 0))
    return x, columns


def _target_error(tables: list[Table], target: str, row: int, problem: str) -> UserInputError:
    for table in tables:
        if row < len(table.frame):
            value = table.frame[target].iloc[row]
            return UserInputError(f"{table.where(row)}, column {target!r}: {value!r} {problem}")
        row -= len(table.frame)
    return UserInputError(f"column {target!r}: {problem}")  # pragma: no cover - row in range


def load_dataset(store: ObjectStore, model: str, spec: Spec) -> Dataset:
    """Read the model's data files and turn them into a Dataset, per the module's rules.

    Raises UserInputError naming the file, line and column of the first problem found.
    """
    tables = read_tables(store, model)
    columns = list(tables[0].frame.columns)
    target = choose_target(columns, spec)
    features = choose_features(columns, target, spec)
    x, feature_columns = _feature_matrix(tables, features)

    cells = [_cell(v) for table in tables for v in table.frame[target].tolist()]
    kind, values = interpret_target(cells)
    task = spec.task or infer_task(kind, values)
    keep = np.array([v is not None for v in values], dtype=bool)
    if not keep.any():
        raise UserInputError(f"target column {target!r} has no values")

    classes: list[Any] | None = None
    if task == "regression":
        if kind not in ("int", "float"):
            row = next(i for i, v in enumerate(cells) if v is not None and _as_number(v) is None)
            raise _target_error(
                tables, target, row, "is not a number; a regression target must be numeric"
            )
        y = np.array([v for v in values if v is not None], dtype=np.float64)
    else:
        _check_not_cut(tables, target, values)
        classes = sorted({v for v in values if v is not None})
        if len(classes) < 2:
            raise UserInputError(
                f"target column {target!r} has a single value ({classes[0]!r}); "
                "a classifier needs at least two classes"
            )
        if len(classes) > MAX_CLASSES:
            raise UserInputError(
                f"target column {target!r} has {len(classes)} distinct values, more than "
                f"{MAX_CLASSES} classes; set `task: regression` or choose another target"
            )
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[v] for v in values if v is not None], dtype=np.int64)

    dropped = int((~keep).sum())
    if dropped:
        log.info("dropped %d rows without a value in target column %r", dropped, target)
    return Dataset(
        task=task,
        target=target,
        features=features,
        x=x[keep],
        y=y,
        classes=classes,
        sources=[t.key for t in tables],
        dropped_rows=dropped,
        columns=tuple(feature_columns),
    )
