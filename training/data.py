"""A model's dataset: the files under `datasets/<model>/`, read into features and a target.

The rules a data owner can rely on:

- Every `.csv` and `.parquet` object under the prefix is data. Files are read in key order and
  concatenated; they must all have the same columns (the order may differ).
- Target: the spec's `target`, else a column named `target`, else the last column.
- Features: the spec's `features`, else every other column. They must be numeric in this
  version; the first cell that is not a number is reported with its file, line and column.
- Missing values are empty cells and NA, N/A, NaN, null or None (any case). Rows with a missing
  target are dropped. A missing feature is filled with that feature's median over the training
  rows only, after the split, so the holdout does not leak into the fill. The fill is a training
  convenience and not part of the exported graph: clients must send finite values.
- Task: the spec's `task`, else classification when the target holds text or true/false, or
  whole numbers with at most 20 distinct values; regression otherwise. The classes are the
  target's distinct values, sorted, in their original type (numbers stay numbers).
"""

from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from dropflow.card import Task
from dropflow.errors import UserInputError
from dropflow.ports import ObjectStore
from dropflow.spec import Spec

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".parquet")
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})
# Whole numbers with at most this many distinct values are read as class labels.
MAX_INTEGER_CLASSES = 20
MAX_CLASSES = 1000

_INTEGER = re.compile(r"[-+]?\d+")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BOOLEANS = {"true": True, "false": False}


def dataset_prefix(model: str) -> str:
    """The bucket prefix whose files are the model's data."""
    return f"datasets/{model}/"


@dataclass(frozen=True)
class Table:
    """One data file as read: CSV cells are strings, Parquet columns keep their types."""

    key: str
    frame: pd.DataFrame
    header_lines: int  # 1 for CSV (the header is line 1); 0 for Parquet (rows count from 1)

    def where(self, row: int) -> str:
        """Where data row `row` (0-based) is, in the terms the owner sees in the file."""
        if self.header_lines:
            return f"{self.key}, line {row + 1 + self.header_lines}"
        return f"{self.key}, row {row + 1}"


@dataclass(frozen=True)
class Dataset:
    """Features and target ready to split: one row per data row that has a target."""

    task: Task
    target: str
    features: list[str]
    x: np.ndarray  # float64 [rows, features], NaN where a value is missing
    y: np.ndarray  # classification: int64 class index; regression: float64
    classes: list[Any] | None  # classification: original label values, sorted
    sources: list[str]  # the keys that were read
    dropped_rows: int  # rows without a target value

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0


@dataclass(frozen=True)
class Split:
    """Training and holdout rows with missing features filled (float32, as the network eats)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    fill_values: np.ndarray  # per-feature medians of the training rows


# --------------------------------------------------------------------------- reading files
def _read_csv(key: str, data: bytes) -> Table:
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype=str,
            keep_default_na=False,  # we decide what "missing" means (MISSING), per column kind
            na_filter=False,
            skip_blank_lines=False,  # keeps data row i on line i + 2, as the owner counts
            skipinitialspace=True,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        raise UserInputError(f"{key}: the file is empty; expected a header line") from None
    except pd.errors.ParserError as exc:
        raise UserInputError(f"{key}: not a valid CSV file: {exc}".strip()) from None
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{key}: not UTF-8 text ({exc.reason})") from None
    return Table(key, frame.fillna(""), header_lines=1)


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
    keys = [i.key for i in store.list(prefix) if i.key.lower().endswith(DATA_SUFFIXES)]
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
def _numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN where missing, mask of cells present but not finite numbers)."""
    if is_bool_dtype(column) or is_numeric_dtype(column):
        values = column.to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(values)
        return values, ~missing & ~np.isfinite(values)
    text = column.map(_text).astype(object)
    missing = text.map(lambda s: s.lower() in MISSING).to_numpy(dtype=bool)
    parsed = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(dtype=float)
    return np.where(missing, np.nan, parsed), ~missing & ~np.isfinite(parsed)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip()


def _cell(value: Any) -> Any:
    """A target cell as a plain Python value: None (missing), bool, int, float or str."""
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


def _feature_matrix(tables: list[Table], features: list[str]) -> np.ndarray:
    blocks = []
    for table in tables:
        block = np.empty((len(table.frame), len(features)))
        for j, name in enumerate(features):
            column = table.frame[name]
            values, bad = _numbers(column)
            if bad.any():
                row = int(np.argmax(bad))
                value = column.iloc[row]
                if np.isnan(values).all():
                    raise UserInputError(
                        f"column {name!r} holds text, not numbers (first at {table.where(row)}: "
                        f"{value!r}); features must be numeric in this version: leave it out "
                        "by listing the wanted columns under `features:` in dropflow.yaml"
                    )
                raise UserInputError(
                    f"{table.where(row)}, column {name!r}: {value!r} is not a number; "
                    "fix the value or leave the cell empty to mark it missing"
                )
            block[:, j] = values
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.empty((0, len(features)))


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
    x = _feature_matrix(tables, features)

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
    )


# --------------------------------------------------------------------------- split
def split(dataset: Dataset, holdout_fraction: float, seed: int) -> Split:
    """A seeded train/holdout split (stratified by class for classification).

    Every class with at least two rows has at least one in each part. Missing features are
    filled with the training rows' medians. Raises UserInputError when there are too few rows.
    """
    n = len(dataset.y)
    # One permutation of all rows, then each class takes its first rows in that order: which
    # rows are held out depends on the seed and the rows, not on how the labels sort.
    order = np.random.default_rng(seed).permutation(n)
    if dataset.task == "classification":
        groups = [order[dataset.y[order] == c] for c in range(dataset.n_classes)]
    else:
        groups = [order]
    holdout_parts = []
    for group in groups:
        if len(group) < 2:
            continue  # a lone example is worth more in training than as a 1-row holdout
        size = min(max(1, round(len(group) * holdout_fraction)), len(group) - 1)
        holdout_parts.append(group[:size])
    holdout = np.sort(np.concatenate(holdout_parts)) if holdout_parts else np.array([], int)
    is_holdout = np.zeros(n, dtype=bool)
    is_holdout[holdout] = True
    if not is_holdout.any() or is_holdout.all():
        raise UserInputError(
            f"too few rows ({n}) to train and hold out {holdout_fraction:.0%} for evaluation"
        )
    x_train, x_holdout = dataset.x[~is_holdout], dataset.x[is_holdout]
    fill = np.zeros(x_train.shape[1])
    present = ~np.isnan(x_train).all(axis=0)  # an all-missing column is filled with 0
    if present.any():
        fill[present] = np.nanmedian(x_train[:, present], axis=0)

    def filled(x: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(x), fill, x).astype(np.float32)

    return Split(
        x_train=filled(x_train),
        y_train=dataset.y[~is_holdout],
        x_holdout=filled(x_holdout),
        y_holdout=dataset.y[is_holdout],
        fill_values=fill,
    )
