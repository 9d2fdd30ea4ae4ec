"""What a family's reading gives the job, and the seeded train/holdout split of it.

Whatever the kind of data (training.families), a dataset becomes examples: one input row per
example, in the graph's own dtype (`x`: float32 columns for tables), and one target per row
(`y`: class ids int64 for classification, values float64 for regression), with the task, the
target's name and the class labels. The split, the holdout metrics, the parity evidence and
the card use only that; a family needing more of its data later subclasses Examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dropflow.errors import UserInputError
from dropflow.vocabulary.card import Feature, Task


@dataclass(frozen=True)
class Examples:
    """A dataset read by a family: inputs, targets and what they mean.

    `x` is the one copy of the inputs the job holds (the tabular reader allocates it once, in
    the graph's dtype, and hands it over as it is): at a million rows it is most of the job's
    memory, so whatever splits or batches it should take rows by index rather than copy parts
    of it. A family whose inputs do not fit in memory (images) gives instead a source that
    reads rows on demand (training.loop.BatchSource; indexing it with rows gives another such
    source, np.asarray of it the decoded rows).
    """

    task: Task
    target: str  # the target's name, as the card records it
    x: np.ndarray  # [rows, ...] in the graph's input dtype
    y: np.ndarray  # classification: int64 class index; regression: float64
    classes: list[Any] | None  # classification: the original label values, index = class id
    # The graph's input as the card describes it: the API's input schema, and what serving
    # turns a client's instances into `x`-like rows with (dropflow.serving.service.InputSchema).
    features: list[Feature]
    sources: list[str]  # the keys that were read

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0


@dataclass(frozen=True)
class Split:
    """Training and holdout rows, as the network eats them (the graph's input dtype)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray


def holdout_mask(
    task: Task, y: np.ndarray, n_classes: int, holdout_fraction: float, seed: int
) -> np.ndarray:
    """Which rows are held out (bool [rows]): seeded, stratified by class for classification.

    Every class with at least two rows has at least one in each part. Raises UserInputError
    when there are too few rows.
    """
    n = len(y)
    # One permutation of all rows, then each class takes its first rows in that order: which
    # rows are held out depends on the seed and the rows, not on how the labels sort.
    order = np.random.default_rng(seed).permutation(n)
    if task == "classification":
        groups = [order[y[order] == c] for c in range(n_classes)]
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
    return is_holdout


def split(examples: Examples, holdout_fraction: float, seed: int) -> Split:
    """The seeded train/holdout split of `examples` (see holdout_mask); rows keep their dtype."""
    held = holdout_mask(examples.task, examples.y, examples.n_classes, holdout_fraction, seed)
    return Split(
        x_train=examples.x[~held],
        y_train=examples.y[~held],
        x_holdout=examples.x[held],
        y_holdout=examples.y[held],
    )


__all__ = ["Examples", "Split", "holdout_mask", "split"]
