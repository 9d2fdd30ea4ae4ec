"""reference.npz carries every holdout row unless their inputs would make it too large to load."""

from __future__ import annotations

import numpy as np

from training.export import REFERENCE_INPUT_BYTES, reference_rows


def test_a_table_holdout_is_carried_whole():
    holdout = np.zeros((200_000, 32), dtype=np.float32)  # 25.6 MB: the 1M-row bench's

    assert np.array_equal(reference_rows(holdout, seed=0), np.arange(200_000))


def test_large_images_are_sampled_to_the_byte_bound_across_the_holdout():
    holdout = np.zeros((2_000, 224, 224, 3), dtype=np.uint8)  # 150 KB a row, 301 MB

    rows = reference_rows(holdout, seed=0)

    assert len(rows) == REFERENCE_INPUT_BYTES // (224 * 224 * 3) == 445
    assert np.all(np.diff(rows) > 0)  # distinct, in row order
    assert rows[0] < 100 and rows[-1] > 1_900  # from all over the holdout, not its start
    assert np.array_equal(rows, reference_rows(holdout, seed=0))
    assert not np.array_equal(rows, reference_rows(holdout, seed=1))
