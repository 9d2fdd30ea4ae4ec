"""The network dropflow trains: standardisation, an MLP with ReLU, and the task's output head.

Preprocessing lives inside the module (as buffers) so that the exported ONNX graph takes raw
feature values, as the card promises. Its forward() is exactly what the graph computes:
- classification: softmax probabilities, float32 [batch, n_classes];
- regression: the prediction in the target's original units, float32 [batch].
Training uses `scores()` instead: logits, or the prediction in standardised target units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dropflow.card import Task

# A feature whose training values are (nearly) constant is centred but not scaled: dividing
# by a tiny std would turn rounding noise in client inputs into huge activations.
_MIN_STD = 1e-8


def standardisation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of `values` (float64 maths), std 1 where a column is constant."""
    data = np.asarray(values, dtype=np.float64)
    mean = data.mean(axis=0)
    std = data.std(axis=0)
    std = np.where(std < _MIN_STD, 1.0, std)
    return mean, std


class Network(nn.Module):
    """An MLP on standardised inputs; see the module docstring for what forward() returns."""

    def __init__(
        self,
        task: Task,
        n_features: int,
        n_outputs: int,
        hidden_layers: Sequence[int] = (64, 32),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.task = task
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_std", torch.ones(n_features))
        # Regression learns the target in standardised units, which keeps Adam's default step
        # sizes sensible whatever the target's scale (house prices or probabilities).
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        layers: list[nn.Module] = []
        width = n_features
        for hidden in hidden_layers:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, n_outputs))
        self.mlp = nn.Sequential(*layers)

    def set_standardisation(
        self,
        x_mean: np.ndarray,
        x_std: np.ndarray,
        y_mean: float = 0.0,
        y_std: float = 1.0,
    ) -> None:
        """Store the training rows' statistics in the buffers (they are exported with it)."""
        self.x_mean.copy_(torch.as_tensor(x_mean, dtype=torch.float32))
        self.x_std.copy_(torch.as_tensor(x_std, dtype=torch.float32))
        self.y_mean.fill_(float(y_mean))
        self.y_std.fill_(float(y_std))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """What the loss sees: logits [batch, n_classes], or [batch, 1] standardised values."""
        return self.mlp((x - self.x_mean) / self.x_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.scores(x)
        if self.task == "classification":
            return torch.softmax(scores, dim=1)
        return scores[:, 0] * self.y_std + self.y_mean


def build_network(
    task: Task,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    n_classes: int = 0,
    hidden_layers: Sequence[int] = (64, 32),
    dropout: float = 0.0,
) -> Network:
    """A fresh network with its standardisation fitted to the training rows.

    Weights are drawn from torch's global generator: seed it first for a reproducible start.
    """
    n_outputs = n_classes if task == "classification" else 1
    network = Network(task, x_train.shape[1], n_outputs, hidden_layers, dropout)
    x_mean, x_std = standardisation(x_train)
    if task == "regression":
        y_mean, y_std = standardisation(np.asarray(y_train, dtype=np.float64).reshape(-1, 1))
        network.set_standardisation(x_mean, x_std, float(y_mean[0]), float(y_std[0]))
    else:
        network.set_standardisation(x_mean, x_std)
    return network


def predict(network: Network, x: np.ndarray) -> np.ndarray:
    """The network's forward() on `x` in eval mode, as float32 numpy (what the graph returns)."""
    network.eval()
    with torch.inference_mode():
        return network(torch.as_tensor(x, dtype=torch.float32)).numpy()
