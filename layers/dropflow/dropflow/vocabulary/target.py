"""Which column of a table a model predicts: the spec's `target`, else the one column whose
name says it is the target. Never a guess from the column's place.

Exported tables rarely put the label last (a penguins export ends with `year`), so with no
`target:` in dropflow.yaml the target is the column named target, label, class or y, in any
case. A table with none of them, or with several, fails the job with its columns listed and
the one line to add to the spec. The launcher applies the rule to the first data file's header
(`csv_header`, read through ObjectStore.get_start) before it asks for any instance, and the
training job applies it again to the files it reads, so both fail with the same message.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from dropflow.errors import UserInputError
from dropflow.ports import ObjectInfo, ObjectStore
from dropflow.vocabulary.datasets import SPEC_FILE, dataset_prefix

# Column names taken as the target when the spec names none (compared in lower case).
TARGET_NAMES = ("target", "label", "class", "y")
# A header longer than this (thousands of columns) is left to the training job's reader.
HEADER_BYTES = 256 * 1024
_LISTED = 40  # columns quoted in a message; the rest are counted


def choose_target(columns: Sequence[str], target: str | None, *, model: str) -> str:
    """The target column among `columns` (the data's header): `target` (the spec's) when
    given, else the one column named as in TARGET_NAMES.

    Raises UserInputError naming the columns and what to write in the model's dropflow.yaml
    when the spec's target is not a column, or when no column, or several, are named so.
    """
    spec = f"{dataset_prefix(model)}{SPEC_FILE}"
    if target is not None:
        if target not in columns:
            raise UserInputError(
                f"target column {target!r} (from {spec}) not found; "
                f"available columns: {_listed(columns)}"
            )
        return target
    named = [c for c in columns if c.strip().lower() in TARGET_NAMES]
    if len(named) == 1:
        return named[0]
    if named:
        raise UserInputError(
            f"several columns could be the target ({', '.join(map(repr, named))}); say which "
            f"one with the line `target: {named[0]}` in {spec}"
        )
    example = columns[0] if columns else "<column>"
    raise UserInputError(
        f"which column to predict is not known: {spec} names no `target:` and no column is "
        f"named {', '.join(TARGET_NAMES[:-1])} or {TARGET_NAMES[-1]} (in any case); "
        f"available columns: {_listed(columns)}. Add the line `target: <column>` to {spec}, "
        f"for example `target: {example}`"
    )


def csv_header(store: ObjectStore, info: ObjectInfo) -> list[str] | None:
    """The column names on the first line of the CSV object `info`, as the training job's
    reader sees them (spaces around a name trimmed), read from at most HEADER_BYTES of it;
    None when that cannot be told here (no line end within them, not UTF-8): the training
    job's reader then says what is wrong, naming the file."""
    start = store.get_start(info.key, min(info.size, HEADER_BYTES))
    end = min((i for i in (start.find(b"\n"), start.find(b"\r")) if i >= 0), default=-1)
    if end < 0:
        if len(start) < info.size or not start:
            return None
        end = len(start)
    try:
        line = start[:end].decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if line.count('"') % 2:
        return None  # a quoted name with a line break inside: the reader knows best
    names = next(csv.reader(io.StringIO(line)), [])
    return [name.strip() for name in names] or None


def _listed(columns: Sequence[str]) -> str:
    shown = ", ".join(columns[:_LISTED])
    more = len(columns) - _LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")
