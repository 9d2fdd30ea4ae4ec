"""The tabular family's network: imputation, standardisation, one-hot, an MLP, the task's head.

Preprocessing lives inside the module (as buffers) so that the exported ONNX graph takes the
columns the card describes (dropflow.vocabulary.card) and clients need no preprocessing code:
- a numeric column's NaN (a missing value) is filled with the training rows' median, then the
  column is standardised with the training rows' mean and std (computed after the fill);
- a categorical column holds a category code (0.0, 1.0, ...: the index in the card's
  `categories`) and is one-hot encoded by comparing it with constants, so the graph needs no
  ONNX OneHot/ScatterND and an unseen code simply encodes as all zeros. One-hot columns are
  not standardised: a rare category would otherwise become a huge 1/sqrt(p) input.
The head on top is every family's (training.network.TaskNetwork): forward() is exactly what
the graph computes, softmax probabilities float32 [batch, n_classes] or the prediction in the
target's original units float32 [batch]; training uses `scores()`: logits, or the prediction
in standardised target units.
Category codes must reach the module as float32 (exact for any code below 2**24); autocast
leaves them so, because comparisons and index_select are not autocast ops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dropflow.vocabulary.card import Task
from training.network import TaskNetwork, predict

# A feature whose training values are (nearly) constant is centred but not scaled: dividing
# by a tiny std would turn rounding noise in client inputs into huge activations.
_MIN_STD = 1e-8


def _mean_std(column: np.ndarray) -> tuple[float, float]:
    data = np.asarray(column, dtype=np.float64)
    std = float(data.std())
    return float(data.mean()), std if std >= _MIN_STD else 1.0


def _median(column: np.ndarray) -> float:
    data = np.asarray(column, dtype=np.float64)
    present = data[~np.isnan(data)]
    return float(np.median(present)) if len(present) else 0.0


def standardisation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of `values` (float64 maths, one column at a time: no float64
    copy of the whole matrix), std 1 where a column is constant."""
    n = values.shape[1]
    mean, std = np.zeros(n), np.ones(n)
    for j in range(n):
        mean[j], std[j] = _mean_std(values[:, j])
    return mean, std


def medians(values: np.ndarray) -> np.ndarray:
    """Per-column median of the values present (NaN = missing); 0 for a column with none."""
    return np.array([_median(values[:, j]) for j in range(values.shape[1])], dtype=np.float64)


class Network(TaskNetwork):
    """An MLP on imputed, standardised and one-hot inputs; see the module docstring."""

    def __init__(
        self,
        task: Task,
        n_features: int,
        n_outputs: int,
        hidden_layers: Sequence[int] = (64, 32),
        dropout: float = 0.0,
        category_counts: Mapping[int, int] | None = None,
    ) -> None:
        """`category_counts` maps a categorical column's index to its number of categories;
        every other column is numeric."""
        super().__init__(task)
        counts = dict(category_counts or {})
        for column, count in counts.items():
            if not 0 <= column < n_features or count < 1:
                raise ValueError(f"category_counts: column {column} with {count} categories")
        numeric = [j for j in range(n_features) if j not in counts]
        categorical = sorted(counts)
        self.n_features = n_features
        # Python flags, fixed at construction: the exported graph has only the steps it needs.
        self._all_numeric = not counts
        self._has_numeric = bool(numeric)
        self.register_buffer("x_median", torch.zeros(len(numeric)))
        self.register_buffer("x_mean", torch.zeros(len(numeric)))
        self.register_buffer("x_std", torch.ones(len(numeric)))
        # Layout constants, rebuilt from category_counts: not state, so kept out of state_dict.
        self.register_buffer("numeric_columns", torch.tensor(numeric, dtype=torch.int64), False)
        # One entry per one-hot output: the input column it reads and the code it stands for.
        self.register_buffer(
            "one_hot_columns",
            torch.tensor([j for j in categorical for _ in range(counts[j])], dtype=torch.int64),
            False,
        )
        self.register_buffer(
            "one_hot_codes",
            torch.tensor([c for j in categorical for c in range(counts[j])], dtype=torch.float32),
            False,
        )
        layers: list[nn.Module] = []
        width = len(numeric) + sum(counts.values())
        for hidden in hidden_layers:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, n_outputs))
        self.mlp = nn.Sequential(*layers)

    @property
    def category_counts(self) -> dict[int, int]:
        """Categorical column index -> number of categories (empty when all are numeric)."""
        columns = self.one_hot_columns.tolist()
        return {j: columns.count(j) for j in sorted(set(columns))}

    def set_standardisation(
        self,
        x_mean: np.ndarray,
        x_std: np.ndarray,
        y_mean: float = 0.0,
        y_std: float = 1.0,
        x_median: np.ndarray | None = None,
    ) -> None:
        """Store the training rows' statistics in the buffers (they are exported with it).

        The x statistics are per numeric column, in column order; `x_median` (default 0)
        fills missing values before standardising.
        """
        self.x_mean.copy_(torch.as_tensor(x_mean, dtype=torch.float32))
        self.x_std.copy_(torch.as_tensor(x_std, dtype=torch.float32))
        if x_median is not None:
            self.x_median.copy_(torch.as_tensor(x_median, dtype=torch.float32))
        self.set_target_scale(y_mean, y_std)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw input rows [batch, n_features] -> what the MLP reads (see the module docstring)."""
        parts = []
        if self._has_numeric:
            numbers = x if self._all_numeric else x.index_select(1, self.numeric_columns)
            numbers = torch.where(torch.isnan(numbers), self.x_median, numbers)
            parts.append((numbers - self.x_mean) / self.x_std)
        if not self._all_numeric:
            codes = x.index_select(1, self.one_hot_columns)
            parts.append((codes == self.one_hot_codes).to(x.dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """What the loss sees: logits [batch, n_classes], or [batch, 1] standardised values."""
        return self.mlp(self.encode(x))


def build_network(
    task: Task,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    n_classes: int = 0,
    hidden_layers: Sequence[int] = (64, 32),
    dropout: float = 0.0,
    category_counts: Mapping[int, int] | None = None,
) -> Network:
    """A fresh network with its preprocessing fitted to the training rows.

    `x_train` holds raw numbers (NaN where missing) and, in the columns `category_counts`
    names (column index -> number of categories), category codes. The numeric columns'
    medians, then mean and std of the median-filled values, become the network's buffers; they
    are computed one column at a time (a float64 copy of one column, never of the matrix), on
    the rows given (the job gives at most training.split.FIT_ROWS, a seeded sample of the
    training rows on a larger table).
    Weights are drawn from torch's global generator: seed it first for a reproducible start.
    """
    counts = dict(category_counts or {})
    x = np.asarray(x_train)
    n_outputs = n_classes if task == "classification" else 1
    network = Network(task, x.shape[1], n_outputs, hidden_layers, dropout, counts)
    for column, count in counts.items():
        codes = x[:, column]
        if not np.all((codes >= 0) & (codes < count) & (codes == np.round(codes))):
            raise ValueError(f"column {column}: category codes must be integers in [0, {count})")
    numeric = network.numeric_columns.tolist()
    fill, x_mean, x_std = np.zeros(len(numeric)), np.zeros(len(numeric)), np.ones(len(numeric))
    for i, j in enumerate(numeric):
        numbers = x[:, j].astype(np.float64)
        fill[i] = _median(numbers)
        x_mean[i], x_std[i] = _mean_std(np.where(np.isnan(numbers), fill[i], numbers))
    if task == "regression":
        y_mean, y_std = _mean_std(np.asarray(y_train, dtype=np.float64).reshape(-1))
        network.set_standardisation(x_mean, x_std, y_mean, y_std, fill)
    else:
        network.set_standardisation(x_mean, x_std, x_median=fill)
    return network


# predict is every family's (training.network); kept importable here for the benchmarks.
__all__ = ["Network", "build_network", "medians", "predict", "standardisation"]
