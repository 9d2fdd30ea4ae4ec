"""The prediction service behind `POST /models/{name}/predict` (no HTTP here).

A `ModelCache` lives once per execution environment: it keeps one onnxruntime session per
(model, version), the cards, and each model's champion pointer for `champion_ttl` seconds, so
a warm request touches neither the store nor the registry until the pointer expires.
`PredictionService` checks the client's instances against the card, runs the graph and maps
class ids back to the target's original labels.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import onnxruntime as ort

from dropflow.card import INPUT_NAME, PREDICTION, PROBABILITIES, Card, artifact_key, card_key
from dropflow.catalog import Catalog
from dropflow.errors import DropflowError, NotFoundError, NotReadyError
from dropflow.names import check_model_name, check_version
from dropflow.ports import ObjectStore, Registry

SERVED_BY = "lambda"
# A model with jobs but no champion is usually minutes away from one (training + promotion).
NOT_READY_RETRY_AFTER = 60
# How many problems one 422 lists: enough to fix a batch in one go, short enough to read.
MAX_REPORTED_PROBLEMS = 5
# The graph's input is float32: a larger magnitude would become infinity inside the model.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class InvalidInstances(DropflowError, ValueError):
    """The client's instances do not fit the model's input schema (the message says where)."""


def available_cpus() -> int:
    """CPUs this process may run on (Lambda grants vCPUs in proportion to memory)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def open_session(model_bytes: bytes, *, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session for a serialized model, using `threads` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    # One request at a time per environment: parallelism inside the operators is what pays.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class _Pointer:
    version: str
    fetched_at: float


class ModelCache:
    """Sessions, cards and champion pointers, cached for the life of the execution environment.

    Thread-safe (the local gateway serves requests from several threads). Sessions are kept in
    a small LRU so that an environment that sees many champion switches does not grow forever.
    """

    def __init__(
        self,
        store: ObjectStore,
        registry: Registry,
        *,
        champion_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        threads: int | None = None,
        max_sessions: int = 4,
    ) -> None:
        self.store = store
        self.catalog = Catalog(registry)
        self.champion_ttl = champion_ttl
        self.clock = clock
        self.threads = threads or available_cpus()
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._champions: dict[str, _Pointer] = {}
        self._cards: dict[tuple[str, str], Card] = {}
        self._servable: set[tuple[str, str]] = set()
        self._sessions: OrderedDict[tuple[str, str], ort.InferenceSession] = OrderedDict()

    # ------------------------------------------------------------------ champion pointer
    def champion(self, model: str) -> str:
        """The champion version of `model`, re-read from the registry at most every TTL.

        Raises NotFoundError for a model dropflow never heard of, NotReadyError for a model
        that has jobs or versions but no champion yet.
        """
        now = self.clock()
        with self._lock:
            pointer = self._champions.get(model)
        if pointer is not None and now - pointer.fetched_at < self.champion_ttl:
            return pointer.version
        champion = self.catalog.champion(model)
        if champion is None:
            # Not cached: the first champion should be served as soon as it is switched in.
            if self.catalog.exists(model):
                raise NotReadyError(
                    f"model {model!r} has no champion yet (training or promotion is under way); "
                    f"retry in {NOT_READY_RETRY_AFTER} s",
                    retry_after=NOT_READY_RETRY_AFTER,
                )
            raise NotFoundError(f"unknown model {model!r}: GET /models lists the models served")
        with self._lock:
            self._champions[model] = _Pointer(champion.version, now)
        return champion.version

    # ------------------------------------------------------------------ versions
    def ensure_servable(self, model: str, version: str) -> None:
        """Check once per environment that `version` was approved by promotion.

        A rejected version may be broken (parity failure), so it is never served.
        """
        if (model, version) in self._servable:
            return
        record = self.catalog.version(model, version)
        if record is None:
            raise NotFoundError(
                f"model {model!r} has no version {version!r}; "
                f"GET /models/{model} shows its champion"
            )
        if record.decision == "pending":
            raise NotReadyError(
                f"version {version!r} of model {model!r} is still being checked by promotion",
                retry_after=NOT_READY_RETRY_AFTER,
            )
        if record.decision != "approved":
            raise NotFoundError(
                f"version {version!r} of model {model!r} was rejected by promotion and is not "
                f"served ({record.reason})"
            )
        with self._lock:
            self._servable.add((model, version))

    def card(self, model: str, version: str) -> Card:
        """The version's card (read from the store once)."""
        key = (model, version)
        with self._lock:
            cached = self._cards.get(key)
        if cached is not None:
            return cached
        card = Card.model_validate_json(self.store.get(card_key(model, version)))
        with self._lock:
            self._cards[key] = card
        return card

    def session(self, model: str, version: str) -> ort.InferenceSession:
        """The version's onnxruntime session, created on first use and kept (LRU)."""
        key = (model, version)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
        card = self.card(model, version)
        data = self.store.get(artifact_key(model, version, card.files.get("model", "model.onnx")))
        # Built outside the lock: loading a large graph must not stall requests for others.
        session = open_session(data, threads=self.threads)
        with self._lock:
            self._sessions[key] = session
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session


class PredictionService:
    """What the HTTP routes call: predictions, the model list and a model's description."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache
        self.catalog = cache.catalog

    def predict(
        self, model: str, instances: Sequence[Any], version: str | None = None
    ) -> dict[str, Any]:
        """Predict for `instances` (rows as lists or as {feature: value} objects).

        Returns {"model", "version", "predictions", "probabilities" (classification only),
        "served_by"}; predictions are labels in the target's original values.
        Raises InvalidName, NotFoundError, NotReadyError or InvalidInstances.
        """
        check_model_name(model)
        if version is None:
            version = self.cache.champion(model)
        else:
            check_version(version)
            self.cache.ensure_servable(model, version)
        card = self.cache.card(model, version)
        batch = to_batch(instances, card.feature_names)
        session = self.cache.session(model, version)
        answer: dict[str, Any] = {"model": model, "version": version}
        if card.task == "classification":
            (probabilities,) = session.run([PROBABILITIES], {INPUT_NAME: batch})
            classes = card.classes or []
            answer["predictions"] = [classes[i] for i in np.argmax(probabilities, axis=1)]
            answer["probabilities"] = probabilities.astype(float).tolist()
        else:
            (prediction,) = session.run([PREDICTION], {INPUT_NAME: batch})
            answer["predictions"] = prediction.reshape(-1).astype(float).tolist()
        answer["served_by"] = SERVED_BY
        return answer

    def list_models(self) -> list[dict[str, Any]]:
        """Every known model with its champion version (None while it has none)."""
        models = []
        for name in self.catalog.models():
            champion = self.catalog.champion(name)
            models.append({"name": name, "champion": champion.version if champion else None})
        return models

    def describe_model(self, name: str) -> dict[str, Any]:
        """The champion's card in short: task, input schema, classes, metrics, versions count.

        A known model without a champion is described with `champion: None` and `ready: False`.
        """
        check_model_name(name)
        if not self.catalog.exists(name):
            raise NotFoundError(f"unknown model {name!r}: GET /models lists the models served")
        champion = self.catalog.champion(name)
        versions = self.catalog.versions(name)
        described: dict[str, Any] = {
            "name": name,
            "ready": champion is not None,
            "champion": champion.version if champion else None,
            "versions": len(versions),
            "route": SERVED_BY,
        }
        if champion is None:
            return described
        card = self.cache.card(name, champion.version)
        described.update(
            task=card.task,
            target=card.target,
            features=[f.model_dump() for f in card.features],
            classes=card.classes,
            metrics={
                "primary": card.metrics.primary,
                "holdout": card.metrics.holdout,
                "baseline": card.metrics.baseline,
            },
            created_at=card.created_at,
        )
        return described


# ---------------------------------------------------------------------- input checking
def _value_problem(value: Any) -> str | None:
    """Why `value` is not a usable feature value, or None when it is."""
    # bool is an int subclass, but `true` for a measurement is a client mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, Real):
        return f"expected a number, got {_describe(value)}"
    try:
        number = float(value)
    except OverflowError:
        return "number too large"
    if math.isnan(number):
        return "NaN is not allowed (send a finite number)"
    if math.isinf(number) or abs(number) > FLOAT32_MAX:
        return f"{value!r} is not a finite float32 number"
    return None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Real):
        return "a number"
    return type(value).__name__


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def rows_problem(instances: Any) -> str | None:
    """Why `instances` is not a non-empty list of rows all of one kind, or None when it is.

    The message reads after "instances: " (the request field) or "invalid instances: ".
    """
    if not isinstance(instances, list | tuple):
        return f"must be a list of rows, got {_describe(instances)}"
    if not instances:
        return "must not be empty: send at least one row"
    first_is_object = isinstance(instances[0], dict)
    for i, row in enumerate(instances):
        if not isinstance(row, list | tuple | dict):
            return (
                f"row {i} is {_describe(row)}: each row must be a list of feature values "
                "or an object {feature: value}"
            )
        if isinstance(row, dict) != first_is_object:
            return (
                f"row {i} is {_describe(row)} but row 0 is {_describe(instances[0])}: "
                "send all rows as lists or all as objects"
            )
    return None


def to_batch(instances: Sequence[Any], features: Sequence[str]) -> np.ndarray:
    """The float32 [N, F] input for `instances`, or InvalidInstances naming each problem.

    Rows are either all lists of F numbers in the card's feature order, or all objects whose
    keys are exactly the feature names. Problems name the row index and the feature.
    """
    shape_problem = rows_problem(instances)
    if shape_problem:
        raise InvalidInstances(f"invalid instances: {shape_problem}")
    n_features = len(features)
    known = set(features)
    as_objects = isinstance(instances[0], dict)
    problems: list[str] = []
    wrong_length = False  # then the feature order is what the client needs to see
    batch = np.empty((len(instances), n_features), dtype=np.float32)
    for i, row in enumerate(instances):
        if as_objects:
            missing = [f for f in features if f not in row]
            unknown = [k for k in row if k not in known]
            if missing or unknown:
                parts = []
                if missing:
                    parts.append(f"missing features {_names(missing)}")
                if unknown:
                    parts.append(f"unknown features {_names(unknown)}")
                problems.append(f"row {i}: " + "; ".join(parts))
                continue
            values = [row[f] for f in features]
        else:
            if len(row) != n_features:
                wrong_length = True
                problems.append(
                    f"row {i}: has {len(row)} values, the model expects {n_features} features"
                )
                continue
            values = list(row)
        for j, value in enumerate(values):
            problem = _value_problem(value)
            if problem is not None:
                problems.append(f"row {i}, feature {features[j]!r}: {problem}")
            else:
                batch[i, j] = value
        if len(problems) > MAX_REPORTED_PROBLEMS:
            break
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        message = "invalid instances: " + "; ".join(shown)
        if len(problems) > len(shown):
            message += "; and more after these"
        if wrong_length:
            message += f". Features in order: {_names(features)}"
        raise InvalidInstances(message)
    return batch
