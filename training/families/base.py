"""The model family interface: what differs between kinds of data.

Why families exist and what they leave alone: docs/architecture.md, Model families.

A family reads a dataset into tensors, builds the network with its preprocessing inside,
describes the graph's input for the card and the API, and exports the graph. Everything else
the job does is the same for every family, and knows nothing of them: the split, the training
loop (training.loop), checkpoints and resume (training.checkpoint), interruption handling
(training.interruption, training.stop), DDP (training.distributed), the holdout metrics, the
parity check and publishing (training.job, training.export).

What a family's network must be: a training.network.TaskNetwork, whose `scores(x)` reads the
graph's input (`Examples.x` rows, in `input_dtype`) and whose head the base class provides;
the default export writes it as the graph the card describes (one input `input` with a dynamic
batch axis, one output `probabilities` or `prediction`), which is what promotion and serving
run. How serving decodes a client's instances into that input is data on the card: the
features `input_schema` returns (dropflow.serving.service.InputSchema reads them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from dropflow.ports import ObjectStore
from dropflow.vocabulary.card import Feature, InputSpec
from dropflow.vocabulary.spec import Spec
from training.examples import Examples
from training.export import export_onnx
from training.network import TaskNetwork
from training.reading import ReadMeter

E = TypeVar("E", bound=Examples)


class Family(ABC, Generic[E]):
    """One kind of data, as the training job needs it. Instances hold no state between calls.

    `name` is what a spec's `family:` says (dropflow.vocabulary.spec). A family that needs more
    of its data in `build` than Examples carries returns a subclass of Examples from `read`.
    """

    name: ClassVar[str]

    @abstractmethod
    def read(self, store: ObjectStore, model: str, spec: Spec) -> E:
        """The files under `datasets/<model>/` as examples: input rows in the graph's dtype,
        targets, task, classes and the input's features.

        Raises UserInputError naming the file and what is wrong with it.
        """

    def read_metered(self, store: ObjectStore, model: str, spec: Spec, meter: ReadMeter) -> E:
        """read(), telling `meter` how far it has got (training.reading), so that the job's
        heartbeat, log and console show the loading stage moving while a large dataset loads.

        The default reads without telling: the job then shows the loading stage alone.
        """
        return self.read(store, model, spec)

    def input_schema(self, examples: E) -> list[Feature]:
        """The card's `features`: the API's input schema, and the data serving decodes a
        client's instances into the graph's input with (names and order; a number, or a
        category coded by its index in `categories`; whether null is accepted)."""
        return list(examples.features)

    def input_spec(self, examples: E) -> InputSpec | None:
        """The card's `input`: the graph's input of an image or a text model (shape, dtype,
        what clients send); None for a table, whose input the features describe alone."""
        return None

    def files(self, examples: E) -> dict[str, tuple[str, bytes]]:
        """Files published beside model.onnx, by their role in the card's `files`: (file name
        in the version's folder, bytes), e.g. a text model's tokenizer. The job records their
        digests with model.onnx's, and promotion and serving check them the same way."""
        return {}

    @abstractmethod
    def build(
        self, examples: E, x_train: np.ndarray, y_train: np.ndarray, spec: Spec
    ) -> TaskNetwork:
        """A fresh network whose preprocessing is fitted to the training rows only.

        Called inside training.loop.reproducible: draw weights from torch's global generator.
        """

    def export(self, network: TaskNetwork, example: np.ndarray, path: Path) -> Path:
        """Write the trained `network` (eval mode) as one ONNX file at `path`, preprocessing
        inside; `example` holds a few input rows. Parity is checked on it afterwards."""
        return export_onnx(network, example, path)

    def card_training(self, examples: E) -> dict[str, Any]:
        """Keys the family adds to the card's `training` section (e.g. files it skipped)."""
        return {}


__all__ = ["Family"]
