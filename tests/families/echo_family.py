"""`echo`, a second model family defined only in the tests, to prove the family seam.

It learns to say back the number it is given. Its data are CSV files under the model's prefix
with one column, `value`, read here with plain string splitting (not training.data); the
target is the value itself (regression). Its network is one linear unit on the value centred
and scaled by the training rows (buffers: the preprocessing is inside the graph). Its input
schema says `value` is a number that may not be null, so serving refuses null for it (the
tabular family's numbers accept null).

Nothing in training/ names it: it plugs in with `training.families.register(EchoFamily)`, and
a spec saying `family: echo` trains it through the real job, export parity and publishing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dropflow.errors import UserInputError
from dropflow.ports import ObjectStore
from dropflow.vocabulary.card import Feature
from dropflow.vocabulary.datasets import data_files, dataset_prefix
from dropflow.vocabulary.spec import Spec
from training.examples import Examples
from training.families.base import Family
from training.network import TaskNetwork

COLUMN = "value"


class EchoNetwork(TaskNetwork):
    """prediction = linear((x - centre) / spread), in the target's units by the shared head."""

    def __init__(self) -> None:
        super().__init__("regression")
        self.register_buffer("centre", torch.zeros(()))
        self.register_buffer("spread", torch.ones(()))
        self.linear = nn.Linear(1, 1)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.centre) / self.spread)


class EchoFamily(Family[Examples]):
    name = "echo"

    def read(self, store: ObjectStore, model: str, spec: Spec) -> Examples:
        keys = sorted(info.key for info in data_files(store.list(dataset_prefix(model))))
        values: list[float] = []
        for key in keys:
            header, *lines = store.get(key).decode().split()
            if header != COLUMN:
                raise UserInputError(f"{key}: expected the header {COLUMN!r}, got {header!r}")
            values += [float(line) for line in lines]
        x = np.array(values, dtype=np.float32).reshape(-1, 1)
        return Examples(
            task="regression",
            target=COLUMN,
            x=x,
            y=x[:, 0].astype(np.float64),
            classes=None,
            features=[Feature(name=COLUMN, dtype="number", nullable=False)],
            sources=keys,
        )

    def build(
        self, examples: Examples, x_train: np.ndarray, y_train: np.ndarray, spec: Spec
    ) -> EchoNetwork:
        network = EchoNetwork()
        network.centre.fill_(float(np.mean(x_train)))
        network.spread.fill_(float(np.std(x_train)) or 1.0)
        network.set_target_scale(float(np.mean(y_train)), float(np.std(y_train)) or 1.0)
        return network
