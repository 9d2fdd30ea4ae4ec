"""The job's split (training.split): holdout, validation and training rows, by index."""

from __future__ import annotations

import numpy as np
import pytest

from dropflow.errors import UserInputError
from training.data import Column, Dataset
from training.examples import Examples
from training.split import MAX_VALIDATION_ROWS, fitting_rows, split


def classification(n_per_class: int, classes: list) -> Dataset:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(len(classes)), n_per_class)
    x = rng.normal(size=(len(y), 3))
    return Dataset(
        task="classification",
        target="t",
        features=["a", "b", "c"],
        x=x,
        y=y,
        classes=classes,
        sources=[],
        dropped_rows=0,
    )


def regression(rows: int) -> Examples:
    x = np.arange(rows, dtype=np.float32)[:, None]
    return Examples("regression", "t", x, np.arange(rows, dtype=np.float64), None, [], [])


def test_the_split_is_the_same_for_the_same_seed_and_differs_for_another():
    data = classification(50, ["a", "b"]).examples()
    first, again, other = split(data, 0.2, 0), split(data, 0.2, 0), split(data, 0.2, 1)
    assert np.array_equal(first.holdout, again.holdout)
    assert not np.array_equal(first.holdout, other.holdout)


def test_the_parts_are_disjoint_row_indices_that_cover_every_row():
    data = classification(50, ["a", "b", "c"]).examples()
    parts = split(data, 0.2, 0, validation_fraction=0.25)
    together = np.concatenate([parts.train, parts.validation, parts.holdout])
    assert sorted(together.tolist()) == list(range(150))
    for part in (parts.train, parts.validation, parts.holdout):
        assert part.dtype == np.int64 and (np.diff(part) > 0).all()


def test_holdout_and_validation_are_stratified():
    data = classification(50, ["a", "b", "c"])
    parts = split(data.examples(), 0.2, 0, validation_fraction=0.25)
    assert np.bincount(data.y[parts.holdout]).tolist() == [10, 10, 10]
    assert np.bincount(data.y[parts.validation]).tolist() == [10, 10, 10]
    assert len(parts.train) == 90


def test_the_validation_cut_leaves_the_holdout_as_it_was():
    """The card and promotion compare versions on the holdout: carving validation rows out
    of the training part must not move it."""
    data = classification(40, ["a", "b"]).examples()
    without = split(data, 0.2, 3)
    with_validation = split(data, 0.2, 3, validation_fraction=0.3)
    assert np.array_equal(without.holdout, with_validation.holdout)
    assert len(without.validation) == 0
    assert set(with_validation.validation) <= set(without.train)


def test_the_held_out_rows_do_not_depend_on_how_labels_sort():
    data = classification(40, ["a", "b"])
    relabelled = Dataset(**{**data.__dict__, "y": 1 - data.y, "classes": ["b", "a"]})
    assert np.array_equal(
        split(data.examples(), 0.2, 0).holdout, split(relabelled.examples(), 0.2, 0).holdout
    )


def test_a_small_training_part_gets_no_validation():
    parts = split(regression(20), 0.2, 0, validation_fraction=0.2)
    assert len(parts.validation) == 0 and len(parts.train) == 16


def test_validation_is_capped_and_the_rest_trains(monkeypatch):
    monkeypatch.setattr("training.split.MAX_VALIDATION_ROWS", 30)
    parts = split(regression(1000), 0.2, 0, validation_fraction=0.5)
    assert len(parts.validation) == 30 and len(parts.train) == 770
    assert MAX_VALIDATION_ROWS == 50_000


def test_the_split_indexes_the_matrix_it_does_not_copy_it():
    data = classification(30, ["a", "b"]).examples()
    parts = split(data, 0.2, 0, validation_fraction=0.2)
    # Indices only: what the job and the loop use to read the one matrix.
    assert {"train", "validation", "holdout"} == set(parts.__dataclass_fields__)
    np.testing.assert_array_equal(data.x[parts.holdout][:, 0], data.x[:, 0][parts.holdout])


def test_the_rows_a_family_fits_on_are_all_training_rows_or_a_seeded_sample():
    train = np.arange(0, 1000, 2)
    assert fitting_rows(train, 0) is train
    sample = fitting_rows(train, 0, limit=100)
    assert len(sample) == 100 and set(sample) <= set(train) and (np.diff(sample) > 0).all()
    assert np.array_equal(sample, fitting_rows(train, 0, limit=100))


def test_missing_numbers_and_category_codes_reach_the_network_as_they_are():
    x = np.column_stack(
        [np.arange(10.0), [1, np.nan, 3, 4, 5, np.nan, 7, 8, 9, 10], np.arange(10) % 3]
    )
    data = Dataset(
        task="regression",
        target="t",
        features=["row", "a", "c"],
        x=x,
        y=np.arange(10.0),
        classes=None,
        sources=[],
        dropped_rows=0,
        columns=(Column("row"), Column("a"), Column("c", "category", ("p", "q", "r"))),
    )
    examples = data.examples()
    parts = split(examples, 0.3, 0)
    rows = np.concatenate([parts.train, parts.holdout])
    # The network fills missing numbers (training.model); the split only names rows.
    np.testing.assert_array_equal(examples.x[rows], x[rows].astype(np.float32))


def test_too_few_rows_to_hold_out_is_an_error():
    data = classification(1, ["a", "b"])
    with pytest.raises(UserInputError, match="too few rows"):
        split(data.examples(), 0.2, 0)


def test_classes_too_small_to_spare_a_row_give_no_validation():
    # 20 training rows in 20 classes: a validation row would be a class's only example.
    y = np.repeat(np.arange(20), 2)
    x = np.zeros((40, 1), dtype=np.float32)
    examples = Examples("classification", "t", x, y, list(range(20)), [], [])
    parts = split(examples, 0.5, 0, validation_fraction=0.2)
    assert len(parts.holdout) == 20 and len(parts.validation) == 0 and len(parts.train) == 20
