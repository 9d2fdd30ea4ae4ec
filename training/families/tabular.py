"""The tabular family, the default: CSV and Parquet tables, a network with its preprocessing
inside.

Reading is training.data (columns numeric or categorical, missing values, target and task).
The spec's `model.family` picks the network: `tabm` (the default; training.tabm_model: an
ensemble of MLPs in one network, with robust scaling, numeric embeddings and categorical
encoding inside the graph) or `mlp` (training.model: median fill, standardisation and one-hot
inside the graph). The graph's input is one float32 column per feature: the raw number (NaN
when missing) or the category's code, which is what the card's features tell serving to
encode clients' values as. For both networks NaN in any column means missing or unknown and
gives a finite answer: a number is filled with the training median, a category encodes as
none of the known ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dropflow.ports import ObjectStore
from dropflow.vocabulary.card import Feature, Task
from dropflow.vocabulary.spec import ModelSection, Spec
from training.data import load_dataset
from training.examples import Examples
from training.families.base import Family
from training.model import build_network
from training.network import TaskNetwork
from training.reading import ReadMeter
from training.tabm_model import DROPOUT, ENSEMBLE_SIZE, HIDDEN_LAYERS, build_tabm

# The MLP's defaults, from before the ensemble became the default network.
MLP_HIDDEN_LAYERS = (64, 32)
MLP_DROPOUT = 0.0


def category_counts(features: list[Feature]) -> dict[int, int]:
    """Input column index -> number of categories, for the category features."""
    return {
        j: len(feature.categories or [])
        for j, feature in enumerate(features)
        if feature.dtype == "category"
    }


def build_tabular_network(
    task: Task,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    n_classes: int,
    model: ModelSection,
    category_counts: Mapping[int, int] | None = None,
) -> TaskNetwork:
    """The network `model.family` names, fitted to the training rows (see the module docstring);
    each key `model` leaves out takes that network's default."""
    if model.family == "mlp":
        return build_network(
            task,
            x_train,
            y_train,
            n_classes=n_classes,
            hidden_layers=MLP_HIDDEN_LAYERS if model.hidden_layers is None else model.hidden_layers,
            dropout=MLP_DROPOUT if model.dropout is None else model.dropout,
            category_counts=category_counts,
        )
    return build_tabm(
        task,
        x_train,
        y_train,
        n_classes=n_classes,
        category_counts=category_counts,
        ensemble_size=model.ensemble_size or ENSEMBLE_SIZE,
        hidden_layers=model.hidden_layers or HIDDEN_LAYERS,
        dropout=DROPOUT if model.dropout is None else model.dropout,
    )


class TabularFamily(Family[Examples]):
    """Tables: training.data reads them; training.tabm_model or training.model is the network."""

    name = "tabular"

    def read(self, store: ObjectStore, model: str, spec: Spec) -> Examples:
        return load_dataset(store, model, spec).examples()

    def read_metered(
        self, store: ObjectStore, model: str, spec: Spec, meter: ReadMeter
    ) -> Examples:
        return load_dataset(store, model, spec, meter=meter).examples()

    def build(
        self, examples: Examples, x_train: np.ndarray, y_train: np.ndarray, spec: Spec
    ) -> TaskNetwork:
        return build_tabular_network(
            examples.task,
            x_train,
            y_train,
            n_classes=examples.n_classes,
            model=spec.model,
            category_counts=category_counts(examples.features),
        )


__all__ = ["TabularFamily", "build_tabular_network", "category_counts"]
