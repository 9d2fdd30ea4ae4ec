"""Which column of a table a model predicts: the spec's `target`, else the one column whose
name says it is the target. Never a guess from the column's place.

Exported tables rarely put the label last (a penguins export ends with `year`), so with no
`target:` in dropflow.yaml the target is the column named target, label, class or y, in any
case. A table with none of them, or with several, fails the job with its columns listed and
the one line to add to the spec. The launcher applies the rule to the first data file's header
(dropflow.vocabulary.data_header) before it asks for any instance, and the training job applies
it again to the files it reads, so both fail with the same message.
"""

from __future__ import annotations

from collections.abc import Sequence

from dropflow.errors import UserInputError
from dropflow.vocabulary.datasets import SPEC_FILE, dataset_prefix

# Column names taken as the target when the spec names none (compared in lower case).
TARGET_NAMES = ("target", "label", "class", "y")
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
        f"which column to predict is not known: no column is named "
        f"{', '.join(TARGET_NAMES[:-1])} or {TARGET_NAMES[-1]} (in any case) and no `target:` "
        f"is set; available columns: {_listed(columns)}. Add the line `target: <column>` to "
        f"{spec} (create the file if there is none), for example `target: {example}`"
    )


def _listed(columns: Sequence[str]) -> str:
    shown = ", ".join(columns[:_LISTED])
    more = len(columns) - _LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")
