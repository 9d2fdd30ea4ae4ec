"""How long training runs when the spec does not say: a budget that scales with the data.

First the batch: `training.batch_size` rows per optimizer step (256 by default), except that a
table with fewer than MIN_BATCHES_PER_EPOCH batches' worth of training rows trains in smaller
ones (a power of two, at least MIN_BATCH rows): an epoch of one or two steps would spend its
compute on few updates, and a small table converges in fewer epochs, hence less time, with
several updates per epoch.

Counting epochs whatever the data size undertrains small tables (60 epochs of 120 rows at
batch 64 is 120 optimizer steps) and overtrains nothing but the bill on large ones. So the
budget is counted in work: about MAX_SAMPLES rows seen in all, but never fewer than MIN_STEPS
optimizer steps (a small table gets enough updates), never more than MAX_EPOCHS epochs (a tiny
one does not loop for ever) and never fewer than MIN_EPOCHS (a large one sees each row a few
times). Early stopping (training.loop) usually ends training well before the budget; the
budget is what it may spend at most.

    rows (training part)   batch   steps/epoch   epochs   steps
    100                    32      4             2,000    8,000
    400                    64      7             2,000    14,000
    10,000                 256     40            300      12,000
    100,000                256     391           30       11,730
    1,000,000              256     3,907         3        11,721

An explicit `training.epochs` wins: that many epochs at most, whatever the data.
Patience (how many epochs without a better validation loss end training) is counted the same
way: at least MIN_PATIENCE epochs, and at least PATIENCE_STEPS optimizer steps' worth.
"""

from __future__ import annotations

import math

MIN_BATCH = 32
MIN_BATCHES_PER_EPOCH = 4
MAX_SAMPLES = 3_000_000
MIN_STEPS = 1_500
MAX_EPOCHS = 2_000
MIN_EPOCHS = 3
MIN_PATIENCE = 16
PATIENCE_STEPS = 200


def batch_size(rows: int, largest: int) -> int:
    """Rows per optimizer step on `rows` training rows when the spec allows `largest`."""
    fitting = 2 ** math.floor(math.log2(max(rows, 1) / MIN_BATCHES_PER_EPOCH))
    return max(1, min(largest, max(MIN_BATCH, fitting)))


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """Optimizer steps in one pass over `rows` training rows (the last batch may be short)."""
    return max(1, math.ceil(rows / batch_size))


def epoch_budget(rows: int, batch_size: int, epochs: int | None = None) -> int:
    """The most epochs training runs on `rows` training rows: `epochs` when the spec sets it,
    else the data-scaled budget of the module docstring."""
    if epochs is not None:
        return epochs
    per_epoch = steps_per_epoch(rows, batch_size)
    by_work = math.ceil(MAX_SAMPLES / max(rows, 1))
    by_steps = math.ceil(MIN_STEPS / per_epoch)
    return max(MIN_EPOCHS, min(MAX_EPOCHS, max(by_work, by_steps)))


def patience(rows: int, batch_size: int) -> int:
    """Epochs without a better validation loss after which early stopping ends training."""
    return max(MIN_PATIENCE, math.ceil(PATIENCE_STEPS / steps_per_epoch(rows, batch_size)))


__all__ = ["batch_size", "epoch_budget", "patience", "steps_per_epoch"]
