"""Holdout metrics, and the same metrics for a naive baseline on the same rows.

The baseline (majority class with the training class frequencies as probabilities, or the
training mean) tells a reader whether the model learnt anything: a model that does not beat
it is useless whatever its accuracy looks like.
"""

from __future__ import annotations

import numpy as np

from dropflow.vocabulary.card import Metrics, Task

_EPS = 1e-15  # probabilities are clipped so that one confident mistake costs a finite loss


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """accuracy, macro_f1 (over classes seen in truth or prediction) and log_loss."""
    y_true = np.asarray(y_true, dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    f1s = []
    for c in np.union1d(y_true, predicted):
        tp = np.sum((predicted == c) & (y_true == c))
        fp = np.sum((predicted == c) & (y_true != c))
        fn = np.sum((predicted != c) & (y_true == c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    chosen = np.clip(probabilities[np.arange(len(y_true)), y_true].astype(np.float64), _EPS, 1)
    return {
        "accuracy": float(np.mean(predicted == y_true)),
        "macro_f1": float(np.mean(f1s)),
        "log_loss": float(-np.mean(np.log(chosen))),
    }


def regression_metrics(y_true: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """rmse, mae and r2 (r2 is 0 for a constant holdout target the model misses)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    error = np.asarray(prediction, dtype=np.float64) - y_true
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    # A constant holdout target has no variance to explain: perfect or nothing.
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float(ss_res == 0)
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": r2,
    }


def baseline_outputs(task: Task, y_train: np.ndarray, rows: int, n_classes: int = 0) -> np.ndarray:
    """What a naive model fitted on the training targets outputs for `rows` rows."""
    if task == "classification":
        counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=n_classes)
        return np.tile(counts / counts.sum(), (rows, 1))
    return np.full(rows, float(np.mean(y_train)))


def evaluate(
    task: Task,
    primary: str,
    outputs: np.ndarray,
    y_train: np.ndarray,
    y_holdout: np.ndarray,
    n_classes: int = 0,
) -> Metrics:
    """The card's Metrics: the model's `outputs` on the holdout against the naive baseline."""
    score = classification_metrics if task == "classification" else regression_metrics
    baseline = baseline_outputs(task, y_train, len(y_holdout), n_classes)
    return Metrics(
        primary=primary,
        holdout=score(y_holdout, outputs),
        baseline=score(y_holdout, baseline),
        holdout_rows=len(y_holdout),
        train_rows=len(y_train),
    )
