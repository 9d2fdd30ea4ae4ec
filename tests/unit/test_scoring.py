"""dropflow.vocabulary.scoring against hand-computed values (and training's metrics where
importable)."""

from __future__ import annotations

import numpy as np
import pytest

from dropflow.vocabulary import scoring

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


def test_matches_training_metrics():
    metrics = pytest.importorskip("training.metrics")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 3, 50)
    for name, value in metrics.classification_metrics(y, p).items():
        assert scoring.score("classification", name, y, p) == pytest.approx(value)
    t, q = rng.normal(size=50), rng.normal(size=50)
    for name, value in metrics.regression_metrics(t, q).items():
        assert scoring.score("regression", name, t, q) == pytest.approx(value)


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
