"""Test doubles for promotion and serving: tiny ONNX models published like the training job
would publish them (files, the job's record of them, card last), and a wrapper that counts the
calls made to a port.

The graphs follow the card contract (input `input` float32 [N, F]; output `probabilities`
[N, C] softmax, or `prediction` [N]) and are built with onnx.helper, so the tests need
neither torch nor the training job.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dropflow.errors import NotFoundError
from dropflow.ports import ObjectStore, Registry
from dropflow.records.catalog import Catalog, VersionRecord
from dropflow.records.jobs import Job, JobState, JobStore
from dropflow.vocabulary.card import CARD_FILE, Card, Feature, artifact_key, card_key
from dropflow.vocabulary.digests import sha256_hex

OPSET = 17


def version_id(n: int) -> str:
    """The n-th version id of a test model; later n sorts later, like real version ids."""
    return f"v20261123T1015{n:02d}Z-{n:06x}"


def linear_weights(n_features: int, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = (rng.normal(size=(n_features, n_out)) / np.sqrt(n_features)).astype(np.float32)
    bias = rng.normal(size=(n_out,)).astype(np.float32)
    return weights, bias


def _unknown_as_zero(unknown_columns: np.ndarray | None) -> tuple[list, list, str]:
    """The nodes and initializers that set NaN to 0 in `unknown_columns` (bool [F]), as the
    real graph's one-hot gives a category column's NaN no category; and the name of the
    cleaned input. No nodes when there are no such columns."""
    if unknown_columns is None or not unknown_columns.any():
        return [], [], "input"
    nodes = [
        helper.make_node("IsNaN", ["input"], ["isnan"]),
        helper.make_node("And", ["isnan", "unknown_columns"], ["unknown"]),
        helper.make_node("Where", ["unknown", "zero", "input"], ["known_input"]),
    ]
    initializers = [
        numpy_helper.from_array(unknown_columns.astype(bool), "unknown_columns"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    return nodes, initializers, "known_input"


def classifier_onnx(
    weights: np.ndarray, bias: np.ndarray, unknown_columns: np.ndarray | None = None
) -> bytes:
    """softmax(x @ W + b) with a dynamic batch axis; NaN in `unknown_columns` counts as 0."""
    n_features, n_classes = weights.shape
    nodes, initializers, x = _unknown_as_zero(unknown_columns)
    graph = helper.make_graph(
        [
            *nodes,
            helper.make_node("MatMul", [x, "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_classes])],
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias, "b"),
            *initializers,
        ],
    )
    return _serialize(graph)


def regressor_onnx(
    weights: np.ndarray, bias: np.ndarray, unknown_columns: np.ndarray | None = None
) -> bytes:
    """(x @ w + b) flattened to [batch]; NaN in `unknown_columns` counts as 0."""
    n_features = weights.shape[0]
    nodes, initializers, x = _unknown_as_zero(unknown_columns)
    graph = helper.make_graph(
        [
            *nodes,
            helper.make_node("MatMul", [x, "W"], ["y0"]),
            helper.make_node("Add", ["y0", "b"], ["y1"]),
            helper.make_node("Reshape", ["y1", "flat"], ["prediction"]),
        ],
        "regressor",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch"])],
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
            *initializers,
        ],
    )
    return _serialize(graph)


def _serialize(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # old enough for any onnxruntime the layer may carry
    onnx.checker.check_model(model)
    return model.SerializeToString()


def reference_npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def make_card(
    model: str,
    version: str,
    *,
    task: str = "classification",
    features: list[str] | list[Feature],
    classes: list[Any] | None = None,
    primary: str = "accuracy",
    value: float = 0.9,
    tolerance: float = 1e-4,
    parity_passed: bool = True,
    extra: dict[str, Any] | None = None,
) -> Card:
    return Card.model_validate(
        {
            "model": model,
            "version": version,
            "job_id": f"{model}-20261123T101500Z-{version[-6:]}",
            "task": task,
            "target": "target",
            "features": [
                f.model_dump() if isinstance(f, Feature) else {"name": f} for f in features
            ],
            "classes": classes if task == "classification" else None,
            "metrics": {
                "primary": primary,
                "holdout": {primary: value},
                "holdout_rows": 20,
                "train_rows": 80,
            },
            "parity": {
                "max_abs_diff": 1e-7,
                "tolerance": tolerance,
                "argmax_equal": True if task == "classification" else None,
                "rows": 20,
                "passed": parity_passed,
            },
            "data_version": "d" * 16,
            "spec_hash": "s" * 16,
            "created_at": "2026-11-23T10:15:00Z",
            **(extra or {}),
        }
    )


def publish(
    store: ObjectStore,
    registry: Registry | None,
    model: str,
    version: str,
    *,
    task: str = "classification",
    n_features: int = 4,
    classes: list[Any] | None = None,
    primary: str | None = None,
    value: float = 0.9,
    seed: int = 0,
    features: list[str] | list[Feature] | None = None,
    skew_reference: float = 0.0,
    model_bytes: bytes | None = None,
    reference_bytes: bytes | None = None,
    card_extra: dict[str, Any] | None = None,
    parity_passed: bool = True,
    x: np.ndarray | None = None,
    target: np.ndarray | None = None,
) -> Card:
    """Publish a version as the training job does: model and reference, then the job's record
    of the version with the sha256 of its files (record_publication), then the card.

    `registry` None publishes the files alone, as a hand-written version folder would be: no
    job vouches for them.

    `features` are names (number features, as cards had before categories) or Features;
    the graph is linear in the input columns whatever they hold, so a category column's
    output depends on its code, and takes a category column's NaN (a value sent as unknown) as
    0, the way the real graph gives it no category. `skew_reference` shifts the recorded torch
    outputs, to fake a parity failure; `model_bytes` and `reference_bytes` replace the graph
    and the evidence (e.g. with garbage) as a job would have published them. `x` replaces the
    random holdout rows, and `target` (their labels) is published in reference.npz when given.
    """
    features = features or [f"f{i}" for i in range(n_features)]
    n_features = len(features)
    rng = np.random.default_rng(seed + 1000)
    x = rng.normal(size=(16, n_features)).astype(np.float32) if x is None else x
    unknown_columns = np.array(
        [isinstance(f, Feature) and f.dtype == "category" for f in features], dtype=bool
    )
    if task == "classification":
        classes = classes if classes is not None else ["no", "yes"]
        weights, bias = linear_weights(n_features, len(classes), seed)
        logits = x @ weights + bias
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected = {"probabilities": (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)}
        graph = classifier_onnx(weights, bias, unknown_columns)
        primary = primary or "accuracy"
    else:
        weights, bias = linear_weights(n_features, 1, seed)
        expected = {"prediction": (x @ weights + bias).reshape(-1).astype(np.float32)}
        graph = regressor_onnx(weights, bias, unknown_columns)
        primary = primary or "rmse"
    expected = {k: v + np.float32(skew_reference) for k, v in expected.items()}
    card = make_card(
        model,
        version,
        task=task,
        features=features,
        classes=classes,
        primary=primary,
        value=value,
        parity_passed=parity_passed,
        extra=card_extra,
    )
    graph = model_bytes or graph
    store.put(artifact_key(model, version, "model.onnx"), graph)
    labels = {} if target is None else {"target": np.asarray(target)}
    reference = reference_bytes or reference_npz(input=x, **expected, **labels)
    store.put(artifact_key(model, version, "reference.npz"), reference)
    card_bytes = card.model_dump_json().encode()
    if registry is not None:
        record_publication(
            registry,
            card,
            {"model.onnx": graph, "reference.npz": reference, CARD_FILE: card_bytes},
        )
    store.put(card_key(model, version), card_bytes)
    return card


def record_publication(registry: Registry, card: Card, files: dict[str, bytes]) -> Job:
    """What the training job records before it writes `card`: its job (created here when the
    registry does not know it yet) names the card's version and the sha256 of `files`."""
    jobs = JobStore(registry)
    digests = {name: sha256_hex(data) for name, data in files.items()}
    try:
        jobs.get(card.job_id)
    except NotFoundError:
        jobs.create(
            Job(
                job_id=card.job_id,
                model=card.model,
                data_version=card.data_version,
                state=JobState.EXPORTING,
            )
        )
    return jobs.record_publication(card.job_id, card.version, digests)


def expected_output(store: ObjectStore, model: str, version: str, x: np.ndarray) -> np.ndarray:
    """What the published graph computes for `x`, evaluated with numpy from its weights."""
    graph = onnx.load_from_string(store.get(artifact_key(model, version, "model.onnx"))).graph
    params = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    x = np.asarray(x, dtype=np.float32)
    if "unknown_columns" in params:
        x = np.where(np.isnan(x) & params["unknown_columns"], np.float32(0.0), x)
    out = x @ params["W"] + params["b"]
    if graph.output[0].name == "probabilities":
        exp = np.exp(out - out.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)
    return out.reshape(-1)


class Counting:
    """Wraps a port and counts each method call by name (`calls['get']`)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class ManualClock:
    """An injectable monotonic clock that moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def load_handler(path: Path) -> ModuleType:
    """Import a function's app.py under a fresh module name, as a new execution environment.

    Its module-level code (settings, caches) runs again, against the current environment.
    """
    name = f"{path.parent.name}_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module


class ProxyAnswer:
    """An API Gateway proxy result, read as a client reads it: status, headers, JSON body."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.status = HTTPStatus(raw["statusCode"])
        headers = {k: v[-1] for k, v in (raw.get("multiValueHeaders") or {}).items()}
        self.headers = {**headers, **(raw.get("headers") or {})}
        self.json = json.loads(raw["body"]) if raw.get("body") else None


# ---------------------------------------------------------------------- image and text models
# The tiny image model's input size (the card's height and width).
IMAGE_HEIGHT, IMAGE_WIDTH = 8, 6
TEXT_MAX_LENGTH, TEXT_PAD_ID = 6, 0
TEXT_VOCAB = ["[PAD]", "[UNK]", "great", "good", "fine", "bad", "awful", "broken", "product"]


def image_classifier_onnx(weights: np.ndarray, bias: np.ndarray) -> bytes:
    """softmax(mean RGB / 255 @ W + b) of uint8 [batch, H, W, 3] pixels (the card's image
    input): the normalisation inside the graph, as the contract has it."""
    n_classes = weights.shape[1]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pixels"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("Div", ["mean", "scale"], ["rgb"]),
            helper.make_node("MatMul", ["rgb", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "image_classifier",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.UINT8, ["batch", IMAGE_HEIGHT, IMAGE_WIDTH, 3]
            )
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_classes])],
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(np.array(255.0, dtype=np.float32), "scale"),
        ],
    )
    return _serialize(graph)


def text_classifier_onnx(embedding: np.ndarray, pad_id: int) -> bytes:
    """softmax(sum of E[id] over the ids that are not pad_id) of int64 [batch, L] token ids:
    the attention mask made inside the graph, as the contract has it."""
    n_classes = embedding.shape[1]
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "input"], ["per_token"], axis=0),
            helper.make_node("Equal", ["input", "pad"], ["is_pad"]),
            helper.make_node("Not", ["is_pad"], ["kept"]),
            helper.make_node("Cast", ["kept"], ["mask0"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask0", "last"], ["mask"]),
            helper.make_node("Mul", ["per_token", "mask"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "tokens"], ["logits"], keepdims=0),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "text_classifier",
        [helper.make_tensor_value_info("input", TensorProto.INT64, ["batch", TEXT_MAX_LENGTH])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_classes])],
        initializer=[
            numpy_helper.from_array(embedding, "E"),
            numpy_helper.from_array(np.array(pad_id, dtype=np.int64), "pad"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "last"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "tokens"),
        ],
    )
    return _serialize(graph)


def tokenizer_json(vocab: list[str] = TEXT_VOCAB) -> bytes:
    """A word-level Hugging Face tokenizer (lower case, split on spaces and punctuation), as
    the training job would save one; unknown words are [UNK]."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str().encode()


@dataclass(frozen=True)
class MediaModel:
    """A published image or text model and what its graph computes, in numpy."""

    card: Card
    params: dict[str, np.ndarray]

    def expected(self, batch: np.ndarray) -> np.ndarray:
        """The probabilities the graph gives for `batch` (its uint8 pixels or int64 ids)."""
        if self.card.input is not None and self.card.input.kind == "image":
            rgb = batch.astype(np.float32).mean(axis=(1, 2)) / np.float32(255.0)
            logits = rgb @ self.params["W"] + self.params["b"]
        else:
            mask = (batch != TEXT_PAD_ID).astype(np.float32)[..., None]
            logits = (self.params["E"][batch] * mask).sum(axis=1)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def publish_media(
    store: ObjectStore,
    registry: Registry,
    model: str,
    version: str,
    *,
    kind: str,
    classes: list[Any] | None = None,
    seed: int = 0,
    field: str | None = None,
    route: str | None = "lambda",
    approve: bool = True,
    tokenizer: bytes | None = None,
) -> MediaModel:
    """Publish an image or a text model (the contract's card `input`) as the training job
    would: files, the job's record of their digests (tokenizer.json's included), then the
    card; and, with `approve`, record it approved and switch it in as champion on `route`, as
    promotion would (promotion's own checks of these cards are not written yet). `tokenizer`
    replaces a text model's tokenizer.json."""
    classes = classes or (["cat", "dog"] if kind == "image" else ["neg", "pos"])
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    if kind == "image":
        field = field or "image"
        params = {
            "W": rng.normal(scale=4.0, size=(3, len(classes))).astype(np.float32),
            "b": rng.normal(size=(len(classes),)).astype(np.float32),
        }
        files["model.onnx"] = image_classifier_onnx(params["W"], params["b"])
        spec = {
            "kind": "image",
            "height": IMAGE_HEIGHT,
            "width": IMAGE_WIDTH,
            "channels": 3,
            "dtype": "uint8",
            "layout": "NHWC",
            "field": field,
        }
        x = rng.integers(0, 256, size=(4, IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
        card_files = {"model": "model.onnx", "reference": "reference.npz"}
    else:
        field = field or "review"
        params = {"E": rng.normal(size=(len(TEXT_VOCAB), len(classes))).astype(np.float32)}
        files["model.onnx"] = text_classifier_onnx(params["E"], TEXT_PAD_ID)
        files["tokenizer.json"] = tokenizer or tokenizer_json()
        spec = {
            "kind": "text",
            "max_length": TEXT_MAX_LENGTH,
            "tokenizer": "tokenizer.json",
            "field": field,
            "pad_id": TEXT_PAD_ID,
        }
        x = rng.integers(1, len(TEXT_VOCAB), size=(4, TEXT_MAX_LENGTH), dtype=np.int64)
        card_files = {"model": "model.onnx", "reference": "reference.npz"}
        card_files["tokenizer"] = "tokenizer.json"
    published = MediaModel(
        make_card(
            model,
            version,
            features=[Feature(name=field, dtype=kind)],  # type: ignore[arg-type]
            classes=classes,
            extra={"input": spec, "files": card_files},
        ),
        params,
    )
    files["reference.npz"] = reference_npz(input=x, probabilities=published.expected(x))
    for name, data in files.items():
        store.put(artifact_key(model, version, name), data)
    card_bytes = published.card.model_dump_json().encode()
    job = record_publication(registry, published.card, {**files, CARD_FILE: card_bytes})
    store.put(card_key(model, version), card_bytes)
    if approve:
        catalog = Catalog(registry)
        catalog.add_model(model)
        catalog.record_version(
            VersionRecord(
                model=model,
                version=version,
                job_id=published.card.job_id,
                decision="approved",
                route=route,
                digests=dict(job.digests),
            )
        )
        catalog.switch_champion(model, version, expected=catalog.champion(model), route=route)
    return published
