"""What a family's reading gives the job (training.split cuts it into parts, by index).

Whatever the kind of data (training.families), a dataset becomes examples: one input row per
example, in the graph's own dtype (`x`: float32 columns for tables), and one target per row
(`y`: class ids int64 for classification, values float64 for regression), with the task, the
target's name and the class labels. The split, the holdout metrics, the parity evidence and
the card use only that; a family needing more of its data later subclasses Examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dropflow.vocabulary.card import Feature, Task


@dataclass(frozen=True)
class Examples:
    """A dataset read by a family: inputs, targets and what they mean."""

    task: Task
    target: str  # the target's name, as the card records it
    x: np.ndarray  # [rows, ...] in the graph's input dtype
    y: np.ndarray  # classification: int64 class index; regression: float64
    classes: list[Any] | None  # classification: the original label values, index = class id
    # The graph's input as the card describes it: the API's input schema, and what serving
    # turns a client's instances into `x`-like rows with (dropflow.serving.service.InputSchema).
    features: list[Feature]
    sources: list[str]  # the keys that were read

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0


__all__ = ["Examples"]
