"""Which rows train, which stop the training, which judge it: the job's seeded split, by index.

Three parts of one dataset, as row indices into its matrix (nothing is copied: the loop and
the job index the one matrix the family read):
- holdout: `holdout_fraction` of the rows, never seen by training; the card's metrics, the
  parity evidence and promotion's fair comparison are computed on them;
- validation: `validation_fraction` of the remaining rows (at most MAX_VALIDATION_ROWS), carved
  from the training part: early stopping watches them, the best weights are chosen on them and
  the probabilities calibrated on them (training.loop);
- train: the rest, what the optimizer sees.

Both cuts are seeded and stratified by class for classification (training.examples.holdout_mask,
which the quality benchmark also reproduces the holdout with), so that the same data and seed
give the same parts; which rows are held out does not depend on the validation cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dropflow.errors import UserInputError
from dropflow.vocabulary.spec import TrainingSection
from training.examples import Examples, holdout_mask

# Validation beyond this many rows tells early stopping nothing more: the rest trains.
MAX_VALIDATION_ROWS = 50_000
# Below this many training rows no validation is carved: every row is needed to learn from,
# and a handful of rows would stop training by chance. Training then runs its whole budget.
MIN_ROWS_FOR_VALIDATION = 20
# The validation cut draws from a generator of its own, so the holdout stays what it is.
_VALIDATION_STREAM = 1
# The family fits its preprocessing (medians, quantiles) on at most this many training rows:
# statistics that a larger sample would not change, and a bounded copy of the matrix.
FIT_ROWS = 200_000
_FIT_STREAM = 2


@dataclass(frozen=True)
class Split:
    """Row indices (int64, ascending) of each part; see the module docstring."""

    train: np.ndarray
    validation: np.ndarray
    holdout: np.ndarray


def split(
    examples: Examples,
    holdout_fraction: float,
    seed: int,
    *,
    validation_fraction: float = 0.0,
) -> Split:
    """The seeded holdout / validation / train split of `examples` (module docstring).

    Raises UserInputError when there are too few rows to hold any out. With too few training
    rows (fewer than MIN_ROWS_FOR_VALIDATION), or `validation_fraction` 0, validation is empty.
    """
    task, y, n_classes = examples.task, examples.y, examples.n_classes
    # The holdout is training.examples' own (the quality benchmark reproduces it with it).
    held = holdout_mask(task, y, n_classes, holdout_fraction, seed)
    holdout = np.flatnonzero(held)
    rest = np.flatnonzero(~held)
    validation = np.array([], dtype=np.int64)
    if validation_fraction > 0 and len(rest) >= MIN_ROWS_FOR_VALIDATION:
        fraction = min(validation_fraction, MAX_VALIDATION_ROWS / len(rest))
        # The same stratified draw over the training part, from a generator of its own.
        stream = [seed, _VALIDATION_STREAM]
        try:
            chosen = holdout_mask(task, y[rest], n_classes, fraction, stream)  # type: ignore[arg-type]
        except UserInputError:  # no class with two rows to spare: train on them all
            chosen = np.zeros(len(rest), dtype=bool)
        validation, rest = rest[chosen], rest[~chosen]
    return Split(
        train=rest.astype(np.int64),
        validation=validation.astype(np.int64),
        holdout=holdout.astype(np.int64),
    )


def split_for(examples: Examples, training: TrainingSection) -> Split:
    """split() with the spec's holdout and validation fractions and seed: the job's own split
    (training.job), which the benchmarks reproduce with it."""
    return split(
        examples,
        training.holdout_fraction,
        training.seed,
        validation_fraction=training.validation_fraction,
    )


def fitting_rows(train: np.ndarray, seed: int, limit: int = FIT_ROWS) -> np.ndarray:
    """The training rows a family fits its preprocessing on: all of `train`, or a seeded
    sample of `limit` of them (ascending)."""
    if len(train) <= limit:
        return train
    chosen = np.random.default_rng([seed, _FIT_STREAM]).choice(len(train), limit, replace=False)
    return train[np.sort(chosen)]


__all__ = [
    "FIT_ROWS",
    "MAX_VALIDATION_ROWS",
    "MIN_ROWS_FOR_VALIDATION",
    "Split",
    "fitting_rows",
    "split",
]
