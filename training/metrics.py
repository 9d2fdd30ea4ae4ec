"""The card's Metrics: holdout metrics, and the same metrics for a naive baseline on the rows.

The metrics are promotion's own (dropflow.vocabulary.scoring): the card's numbers and the fair
gate's re-scoring of the same holdout rows come from one implementation. This module only picks
them per task and adds the baseline (majority class with the training class frequencies as
probabilities, or the training mean), which tells a reader whether the model learnt anything:
a model that does not beat it is useless whatever its accuracy looks like.
"""

from __future__ import annotations

import numpy as np

from dropflow.vocabulary import scoring
from dropflow.vocabulary.card import Metrics, Task


def task_metrics(task: Task, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Every metric scoring defines for `task`, of `outputs` (probabilities [rows, classes] or
    predictions [rows]) against the true class ids or values, in scoring's order."""
    return {name: metric(y_true, outputs) for name, metric in scoring.METRICS[task].items()}


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """accuracy, macro_f1 (over classes seen in truth or prediction) and log_loss."""
    return task_metrics("classification", y_true, probabilities)


def regression_metrics(y_true: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """rmse, mae and r2 (r2 is 0 for a constant holdout target the model misses)."""
    return task_metrics("regression", y_true, prediction)


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
    baseline = baseline_outputs(task, y_train, len(y_holdout), n_classes)
    return Metrics(
        primary=primary,
        holdout=task_metrics(task, y_holdout, outputs),
        baseline=task_metrics(task, y_holdout, baseline),
        holdout_rows=len(y_holdout),
        train_rows=len(y_train),
    )
