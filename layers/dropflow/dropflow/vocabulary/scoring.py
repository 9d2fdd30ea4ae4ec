"""Holdout metrics in numpy alone: the one definition that training (the card's values) and
promotion's fair gate (no sklearn or torch in a Lambda) both compute with.

- classification, from class ids and probabilities [rows, classes]: accuracy, macro_f1 (over
  the classes seen in truth or prediction), log_loss (probabilities clipped to 1e-15);
- regression, from true values and predictions [rows]: rmse, mae, r2 (0 for a constant
  holdout target the model misses, 1 when it hits it exactly).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dropflow.vocabulary.card import LOWER_IS_BETTER, Task

_EPS = 1e-15


def accuracy(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean(np.asarray(probabilities).argmax(axis=1) == _ids(y_true)))


def macro_f1(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    y = _ids(y_true)
    predicted = np.asarray(probabilities).argmax(axis=1)
    f1s = []
    for c in np.union1d(y, predicted):
        tp = np.sum((predicted == c) & (y == c))
        fp = np.sum((predicted == c) & (y != c))
        fn = np.sum((predicted != c) & (y == c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def log_loss(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    y = _ids(y_true)
    p = np.asarray(probabilities, dtype=np.float64)
    chosen = np.clip(p[np.arange(len(y)), y], _EPS, 1.0)
    return float(-np.mean(np.log(chosen)))


def rmse(y_true: np.ndarray, prediction: np.ndarray) -> float:
    return float(np.sqrt(np.mean(_error(y_true, prediction) ** 2)))


def mae(y_true: np.ndarray, prediction: np.ndarray) -> float:
    return float(np.mean(np.abs(_error(y_true, prediction))))


def r2(y_true: np.ndarray, prediction: np.ndarray) -> float:
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    ss_res = float(np.sum(_error(y, prediction) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float(ss_res == 0)


METRICS: dict[Task, dict[str, Callable[[np.ndarray, np.ndarray], float]]] = {
    "classification": {"accuracy": accuracy, "macro_f1": macro_f1, "log_loss": log_loss},
    "regression": {"rmse": rmse, "mae": mae, "r2": r2},
}


def supports(task: Task, metric: str) -> bool:
    return metric in METRICS[task]


def score(task: Task, metric: str, y_true: np.ndarray, outputs: np.ndarray) -> float:
    """`metric` of the graph's `outputs` against the holdout labels (KeyError if unknown)."""
    return METRICS[task][metric](y_true, outputs)


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def not_worse(metric: str, candidate: float, champion: float, tolerance: float) -> bool:
    """Whether `candidate` is at most `tolerance` worse than `champion` (NaN is worse)."""
    if higher_is_better(metric):
        return bool(candidate >= champion - tolerance)
    return bool(candidate <= champion + tolerance)


def check_labels(task: Task, y_true: np.ndarray, rows: int, n_classes: int) -> str | None:
    """Why `y_true` cannot label `rows` holdout rows, or None when it can."""
    y = np.asarray(y_true)
    if y.ndim != 1 or len(y) != rows:
        return f"target has shape {list(y.shape)}; expected [{rows}]"
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y.astype(np.float64))):
        return "target holds non-numeric or non-finite values"
    if task == "classification":
        ids = y.astype(np.float64)
        if np.any(ids != np.round(ids)) or np.any(ids < 0) or np.any(ids >= n_classes):
            return f"target must hold class ids 0..{n_classes - 1}"
    return None


def _ids(y_true: np.ndarray) -> np.ndarray:
    return np.asarray(y_true).astype(np.int64).reshape(-1)


def _error(y_true: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    return np.asarray(prediction, dtype=np.float64).reshape(-1) - np.asarray(
        y_true, dtype=np.float64
    ).reshape(-1)
