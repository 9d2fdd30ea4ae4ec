"""The one parity rule (dropflow.vocabulary.parity) that training and promotion both apply."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropflow.vocabulary import parity

P = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45]], dtype=np.float32)


def test_equal_outputs_pass_with_the_record_the_card_keeps():
    verdict = parity.compare("classification", (P, P.copy()), tolerance=1e-4)
    assert verdict.passed and verdict.problem is None
    assert verdict.parity.model_dump() == {
        "max_abs_diff": 0.0,
        "tolerance": 1e-4,
        "argmax_equal": True,
        "rows": 3,
        "passed": True,
    }


def test_a_difference_above_the_tolerance_fails_saying_by_how_much():
    verdict = parity.compare(
        "regression", (np.array([1.0, 2.05]), np.array([1.0, 2.0])), tolerance=1e-4
    )
    assert not verdict.passed and verdict.parity.argmax_equal is None
    assert verdict.problem == "max abs diff 0.05 exceeds the tolerance 0.0001"


def test_another_predicted_class_fails_even_within_the_tolerance():
    flipped = P.copy()
    flipped[2] = [0.45, 0.55]
    verdict = parity.compare("classification", (flipped, P), tolerance=1.0)
    assert not verdict.passed and verdict.parity.argmax_equal is False
    assert verdict.problem == "the graph and the reference disagree on the predicted class"


def test_every_pair_counts_and_the_rows_are_the_first_pairs():
    verdict = parity.compare("classification", (P, P), (P[:1] + 0.001, P[:1]), tolerance=1e-4)
    assert not verdict.passed and verdict.parity.rows == 3
    assert verdict.parity.max_abs_diff == pytest.approx(0.001, rel=1e-3)


def test_a_regression_output_of_rows_by_one_reads_as_rows():
    assert parity.compare("regression", (np.ones((4, 1)), np.ones(4)), tolerance=1e-4).passed


@pytest.mark.parametrize(
    ("graph", "problem"),
    [
        (np.ones(3), "the graph's output shape [3] differs from the reference [4]"),
        (np.array([1.0, np.nan, 1.0, 1.0]), "the graph produced NaN or infinite outputs"),
        (np.array([1.0, np.inf, 1.0, 1.0]), "the graph produced NaN or infinite outputs"),
    ],
)
def test_a_wrong_shape_or_non_finite_output_fails(graph, problem):
    verdict = parity.compare("regression", (graph, np.ones(4)), tolerance=1e-4)
    assert not verdict.passed
    assert verdict.problem is not None and verdict.problem.startswith(problem)


def test_a_nan_difference_is_never_within_the_tolerance():
    verdict = parity.compare("regression", (np.ones(2), np.array([1.0, np.nan])), tolerance=1.0)
    assert not verdict.passed and math.isnan(verdict.parity.max_abs_diff)


def test_the_regression_tolerance_grows_with_the_target_scale_only():
    assert parity.tolerance("classification", 1e6) == parity.TOLERANCE
    assert parity.tolerance("regression", 0.01) == parity.TOLERANCE
    assert parity.tolerance("regression", 2500.0) == pytest.approx(parity.TOLERANCE * 2500)
