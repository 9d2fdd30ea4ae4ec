"""dropflow.vocabulary.scoring against hand-computed values, and the card's metrics (training)
against it where training is importable."""

from __future__ import annotations

import numpy as np
import pytest

from dropflow.vocabulary import scoring
from dropflow.vocabulary.spec import METRICS_BY_TASK

P = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
Y = np.array([0, 1, 1, 1])


def test_classification_metrics():
    assert scoring.accuracy(Y, P) == 0.75
    # class 0: tp 1 fp 1 fn 0 -> 2/3; class 1: tp 2 fp 0 fn 1 -> 0.8
    assert scoring.macro_f1(Y, P) == pytest.approx((2 / 3 + 0.8) / 2)
    expected = -np.mean(np.log([0.9, 0.8, 0.4, 0.7]))
    assert scoring.log_loss(Y, P) == pytest.approx(expected)


def test_log_loss_of_a_certain_mistake_is_finite():
    assert np.isfinite(scoring.log_loss(np.array([1]), np.array([[1.0, 0.0]])))


def test_regression_metrics():
    y, p = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0])
    assert scoring.rmse(y, p) == pytest.approx(np.sqrt(4 / 3))
    assert scoring.mae(y, p) == pytest.approx(2 / 3)
    assert scoring.r2(y, p) == pytest.approx(1 - 4 / 2)
    assert scoring.r2(np.ones(3), np.ones(3)) == 1.0
    assert scoring.r2(np.ones(3), np.zeros(3)) == 0.0


def test_the_card_reports_every_metric_with_the_gates_values():
    # The card's numbers (training) and the fair gate's re-scoring (promotion) must be one
    # implementation: the same names, in the spec's order, and the same values on the same rows.
    evaluate = pytest.importorskip("training.metrics").evaluate
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    labels, values, predictions = rng.integers(0, 3, 50), rng.normal(size=50), rng.normal(size=50)
    for task, y, outputs in [
        ("classification", labels, probabilities),
        ("regression", values, predictions.astype(np.float32)),
    ]:
        metrics = evaluate(task, METRICS_BY_TASK[task][0], outputs, y, y, 3)
        assert tuple(metrics.holdout) == METRICS_BY_TASK[task] == tuple(scoring.METRICS[task])
        for name, value in metrics.holdout.items():
            assert value == scoring.score(task, name, y, outputs), name


def test_the_baseline_is_the_training_class_frequencies_or_mean():
    evaluate = pytest.importorskip("training.metrics").evaluate
    # Training labels 0, 0, 0, 1: every holdout row gets [0.75, 0.25].
    metrics = evaluate("classification", "accuracy", P, np.array([0, 0, 0, 1]), Y, 2)
    assert metrics.baseline["accuracy"] == 0.25  # class 0 for every row; one of four is 0
    assert metrics.baseline["log_loss"] == pytest.approx(-np.mean(np.log([0.75, 0.25, 0.25, 0.25])))
    assert metrics.holdout["accuracy"] == 0.75 and metrics.holdout_rows == 4
    regression = evaluate("regression", "rmse", np.zeros(3), np.array([1.0, 3.0]), np.ones(3))
    assert regression.baseline["mae"] == pytest.approx(1.0)  # the training mean, 2, for all


@pytest.mark.parametrize(
    ("metric", "candidate", "champion", "tolerance", "ok"),
    [
        ("accuracy", 0.9, 0.9, 0.0, True),
        ("accuracy", 0.89, 0.9, 0.0, False),
        ("accuracy", 0.89, 0.9, 0.02, True),
        ("rmse", 1.0, 0.9, 0.05, False),
        ("rmse", 0.9, 1.0, 0.0, True),
        ("accuracy", float("nan"), 0.9, 0.0, False),
    ],
)
def test_not_worse(metric, candidate, champion, tolerance, ok):
    assert scoring.not_worse(metric, candidate, champion, tolerance) is ok


def test_check_labels():
    assert scoring.check_labels("classification", Y, 4, 2) is None
    assert "class ids 0..1" in scoring.check_labels("classification", np.array([0, 2]), 2, 2)
    assert "shape" in scoring.check_labels("regression", np.zeros(3), 4, 0)
    assert "non-finite" in scoring.check_labels("regression", np.array([np.nan]), 1, 0)
