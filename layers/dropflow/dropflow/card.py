"""The model card: `models/<model>/<version>/card.json`, written last by the training job.

It is the contract between training (writer), promotion and serving (readers). The ONNX graph
it describes always has one float32 input named `input` of shape [batch, n_features] and:
- classification: one output `probabilities`, float32 [batch, n_classes] (softmax inside);
  the predicted label is `classes[argmax]`, in the target column's original values;
- regression: one output `prediction`, float32 [batch], in the target's original units.
Preprocessing (standardisation) is inside the graph, so clients send raw feature values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Task = Literal["classification", "regression"]

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"

# Higher is better unless listed here.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})


def card_key(model: str, version: str) -> str:
    return f"models/{model}/{version}/card.json"


def artifact_key(model: str, version: str, name: str) -> str:
    return f"models/{model}/{version}/{name}"


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: Literal["number"] = "number"


class Parity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_abs_diff: float
    tolerance: float
    argmax_equal: bool | None = None  # classification only
    rows: int
    passed: bool


class Metrics(BaseModel):
    model_config = ConfigDict(extra="forbid")
    primary: str  # name of the metric the promotion gate compares
    holdout: dict[str, float]  # e.g. {"accuracy": 0.97, "macro_f1": 0.96, "log_loss": 0.08}
    baseline: dict[str, float] = Field(default_factory=dict)  # naive baseline on the holdout
    holdout_rows: int
    train_rows: int

    @property
    def primary_value(self) -> float:
        return self.holdout[self.primary]

    @property
    def higher_is_better(self) -> bool:
        return self.primary not in LOWER_IS_BETTER


class Card(BaseModel):
    model_config = ConfigDict(extra="allow")  # later issues add keys; readers ignore unknown ones

    schema_version: int = 1
    model: str
    version: str
    job_id: str
    task: Task
    target: str
    features: list[Feature]
    classes: list[Any] | None = None  # classification: original label values, index = class id
    metrics: Metrics
    parity: Parity
    data_version: str
    spec_hash: str
    created_at: str  # ISO 8601 UTC
    timings: dict[str, float] = Field(default_factory=dict)  # seconds: load, train, export, ...
    files: dict[str, str] = Field(
        default_factory=lambda: {"model": "model.onnx", "reference": "reference.npz"}
    )
    model_bytes: int = 0
    attempts: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]
