"""What every family's network is to the loop, the export and the parity check: a task head.

A family's network (training.families) computes `scores(x)` from the graph's input, with its
preprocessing inside; this base class puts the task's head on top, the same for every family:
- classification: forward() is softmax(scores), float32 [batch, n_classes] (`probabilities`);
- regression: scores are [batch, 1] in standardised target units and forward() is
  `scores * y_std + y_mean`, float32 [batch] in the target's units (`prediction`).
forward() is exactly what the exported graph computes (dropflow.vocabulary.card). The loop
trains on scores() (cross-entropy on logits, or the mean squared error in standardised units,
which keeps Adam's default step sizes sensible whatever the target's scale), and the target's
mean and std are buffers, so they are checkpointed and exported with the weights.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from dropflow.vocabulary.card import PREDICTION, PROBABILITIES, Task


class TaskNetwork(nn.Module):
    """A family's network with the task's head: subclasses implement `scores`.

    `input_dtype` is the dtype of the graph's input (float32 unless a family says otherwise):
    rows reach the network, the exporter and onnxruntime in it.
    """

    input_dtype: ClassVar[type[np.generic]] = np.float32

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """What the loss sees: logits [batch, n_classes], or [batch, 1] standardised values."""
        raise NotImplementedError(f"{type(self).__name__} must define scores()")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.scores(x)
        if self.task == "classification":
            return torch.softmax(scores, dim=1)
        return scores[:, 0] * self.y_std + self.y_mean

    @property
    def output_name(self) -> str:
        """The graph's output name for the task (see dropflow.vocabulary.card)."""
        return PROBABILITIES if self.task == "classification" else PREDICTION

    def set_target_scale(self, mean: float, std: float) -> None:
        """Store the training target's mean and std (regression): forward() undoes them."""
        self.y_mean.fill_(float(mean))
        self.y_std.fill_(float(std))

    def standardised(self, y: np.ndarray) -> np.ndarray:
        """Regression targets in the units scores() predicts (float64)."""
        return (np.asarray(y, np.float64) - self.y_mean.item()) / self.y_std.item()

    @property
    def target_scale(self) -> float:
        """How large the regression outputs are (max of |mean| and std of the training
        target; 1 for classification): float32 rounding, hence parity, scales with it."""
        if self.task == "classification":
            return 1.0
        return max(abs(self.y_mean.item()), self.y_std.item())

    def as_input(self, rows: np.ndarray) -> np.ndarray:
        """`rows` as the graph's input: a contiguous array of `input_dtype`."""
        return np.ascontiguousarray(rows, dtype=self.input_dtype)


def predict(network: TaskNetwork, rows: np.ndarray) -> np.ndarray:
    """The network's forward() on `rows` in eval mode, as float32 numpy (what the graph returns)."""
    network.eval()
    with torch.inference_mode():
        return network(torch.as_tensor(network.as_input(rows))).numpy()


__all__ = ["TaskNetwork", "predict"]
