"""The tabular family, the default: CSV and Parquet tables, an MLP with its preprocessing inside.

Reading is training.data (columns numeric or categorical, missing values, target and task);
the network is training.model (median fill, standardisation and one-hot inside the graph). The
graph's input is one float32 column per feature: the raw number (NaN when missing) or the
category's code, which is what the card's features tell serving to encode clients' values as.
"""

from __future__ import annotations

import numpy as np

from dropflow.ports import ObjectStore
from dropflow.vocabulary.card import Feature
from dropflow.vocabulary.spec import Spec
from training.data import load_dataset
from training.examples import Examples
from training.families.base import Family
from training.model import Network, build_network
from training.reading import ReadMeter


def category_counts(features: list[Feature]) -> dict[int, int]:
    """Input column index -> number of categories, for the category features."""
    return {
        j: len(feature.categories or [])
        for j, feature in enumerate(features)
        if feature.dtype == "category"
    }


class TabularFamily(Family[Examples]):
    """Tables: training.data reads them, training.model is the network."""

    name = "tabular"

    def read(self, store: ObjectStore, model: str, spec: Spec) -> Examples:
        return load_dataset(store, model, spec).examples()

    def read_metered(
        self, store: ObjectStore, model: str, spec: Spec, meter: ReadMeter
    ) -> Examples:
        return load_dataset(store, model, spec, meter=meter).examples()

    def build(
        self, examples: Examples, x_train: np.ndarray, y_train: np.ndarray, spec: Spec
    ) -> Network:
        return build_network(
            examples.task,
            x_train,
            y_train,
            n_classes=examples.n_classes,
            hidden_layers=spec.model.hidden_layers,
            dropout=spec.model.dropout,
            category_counts=category_counts(examples.features),
        )


__all__ = ["TabularFamily", "category_counts"]
