"""The Open Inference Protocol v2 (KServe, Triton, MLServer) over JSON, on dropflow's models.

No HTTP here: the predict function maps the routes onto `OpenInference` and the errors onto
statuses. A request sends its rows in one of two ways:
- the graph's own tensor (see dropflow.vocabulary.card), stated honestly: one input `input`,
  FP32, shape [-1, F]: one column per card feature, in card order. A number feature's column
  carries the raw value; null (or NaN) there means missing and is accepted when the feature is
  `nullable` (the graph fills in the training median). A category feature's column carries the
  category's code, its index in the feature's `categories` (0, 1, ...), or null for a missing
  value: the code of `<missing>` when the feature is nullable, else a value the training rows
  never had (below). The model metadata's `parameters` list every feature with its column and
  categories.
- or one input per feature, named for it, shape [N] or [N, 1], holding the raw values as the
  predict API takes them (dropflow.serving.service.InputSchema, the same checks and words):
  BYTES for text (JSON strings), BOOL, or a number type (FP16/32/64, INT8-64, UINT8-64); null
  for a missing value in any of them. This is how a client sends a category by its value.
An image or a text model (a card with `input`, dropflow.vocabulary.card.InputSpec) takes one
input named for the card's `input.field`, BYTES, shape [N] or [N, 1]: per element, an image
(JPEG, PNG or WebP) in base64, or a UTF-8 string, as the predict API takes them
(dropflow.serving.media_input: the same checks and words; a bad image or an empty text is a
422 naming its row). JSON carries no raw bytes: the protocol's binary tensor extension is not
served, so a client base64-encodes an image itself (tritonclient: a numpy object array of the
base64 bytes, binary_data=False).
A text model with tabular columns alongside (card features after the text) takes one input per
feature, as a table model's per-feature inputs: the text's BYTES, and each tabular feature's
raw values (the same checks, warnings and 422s); the graph's own float32 tensor is not taken.
A category value the training rows never had (or a missing one where they had none) is what the
card's `unknown_categories` says: with `encode` (the default) the graph takes it as unknown and
the response's `parameters` carry `warnings`: JSON text of one entry per row, null for a row
without any, else a list of {feature, value, kind, message}, as the predict API's `warnings`;
with `reject` it is a 422 naming the row, the feature, the value and the categories.
The output: `probabilities`, FP32 [-1, C] for classification (the label is classes[argmax],
classes in the metadata's `parameters`), or `prediction`, FP32 [-1] for regression, in the
target's original units.

Metadata `parameters` values are scalars, as the protocol types them: lists are JSON text.

Errors (the protocol's `{"error": "<message>"}` body; statuses chosen by the caller):
- MalformedRequest (400): the body is not an inference request: not JSON, not an object,
  `inputs` missing or empty, a tensor without name/shape/datatype/data of the right JSON types,
  a repeated input, or `data` that does not hold the shape's number of elements (flat, or
  nested exactly as the shape).
- dropflow.serving.api.UnreadableBody (400): JSON that nests deeper than any inference request
  or holds an integer longer than Python converts (the API's one JSON reader refuses it).
- InvalidTensor (422): a well-formed request the model cannot take: an unknown input or output
  name, `input` beside per-feature inputs, a feature without its input, a datatype other than
  FP32 for `input` (or than the protocol's BYTES, BOOL and number types for a feature's), a
  shape other than [N >= 1, F] (or [N] / [N, 1] with one N for every feature), a value that is
  not of its tensor's datatype, not finite or beyond float32, a null in a number column that
  is not nullable, a category code that is not one of the feature's codes, a value the feature
  cannot take (as the predict API words it), an unseen category under `reject`.
- TooManyRows (413): more than MAX_ROWS rows, the predict API's limit.
The protocol itself only says "usually 400" for a failed inference; 422 and 413 follow the
rest of dropflow's API (dropflow.serving.routes; README.md, The HTTP API), and every client
mistake stays a 4xx.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import numpy as np

from dropflow.errors import DropflowError, NotReadyError
from dropflow.observability import logger
from dropflow.serving import api
from dropflow.serving.service import (
    FLOAT32_MAX,
    MAX_ROWS,
    Encoded,
    InstanceEncoder,
    InvalidInstances,
    PredictionService,
    TooManyInstances,
    count_unknown_values,
    missing_value_warning,
)
from dropflow.vocabulary.card import (
    INPUT_NAME,
    MISSING_CATEGORY,
    PREDICTION,
    PROBABILITIES,
    REJECT,
    Card,
)

SERVER_NAME = "dropflow"
PLATFORM = "onnxruntime"
FP32 = "FP32"
BYTES, BOOL = "BYTES", "BOOL"
# The protocol's number datatypes a feature's own input may have (all JSON numbers here).
NUMBER_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"}
    | {"UINT8", "UINT16", "UINT32", "UINT64"}
)
# How many bad values one 422 names.
MAX_REPORTED = 5
# The protocol's sizes are int64.
MAX_SIZE = 2**63 - 1
# A client's value quoted in a message: a few elements, a few digits (a shape may be anything).
_QUOTE = reprlib.Repr()  # python3.11's takes no settings as arguments
_QUOTE.maxlist, _QUOTE.maxlong, _QUOTE.maxlevel = 6, 24, 2
PREFIX = "/v2"


class OipError(DropflowError, ValueError):
    """A client mistake in an OIP request; `status` is the HTTP status it deserves."""

    status = HTTPStatus.BAD_REQUEST


class MalformedRequest(OipError):
    status = HTTPStatus.BAD_REQUEST


class InvalidTensor(OipError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class TooManyRows(OipError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def error_body(message: str) -> dict[str, str]:
    """The protocol's error object."""
    return {"error": message}


def is_oip_path(path: str | None) -> bool:
    """Whether a request path belongs to the Open Inference Protocol (answers its errors)."""
    return bool(path) and (path == PREFIX or str(path).startswith(PREFIX + "/"))


def _tensor_meta(name: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": FP32, "shape": shape}


def _output_meta(card: Card) -> dict[str, Any]:
    if card.task == "classification":
        return _tensor_meta(PROBABILITIES, [-1, len(card.classes or [])])
    return _tensor_meta(PREDICTION, [-1])


class OpenInference:
    """The protocol's health, metadata and inference calls on a PredictionService."""

    def __init__(self, service: PredictionService, server_version: str = "0") -> None:
        self.service = service
        self.server_version = server_version

    # ------------------------------------------------------------------ server
    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": self.server_version, "extensions": []}

    def server_ready(self) -> bool:
        """Whether the function can serve: its registry answers (models are loaded lazily)."""
        try:
            self.service.catalog.models()
        except Exception:  # any adapter failure means "not ready", never a 500
            logger.exception("registry not reachable: not ready")
            return False
        return True

    # ------------------------------------------------------------------ models
    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        """Name, servable versions, platform and the tensor contract of `model` (or version).

        Raises InvalidName/NotFoundError (unknown model or version), NotReadyError.
        """
        described = self.service.servable_version(model, version)
        card = self.service.cache.card(model, described)
        if version is None:
            versions = [
                r.version for r in self.service.catalog.versions(model) if r.decision == "approved"
            ]
        else:
            versions = [version]
        if card.input is not None and card.tabular_features:
            return _text_table_metadata(model, versions, described, card)
        if card.input is not None:
            return _media_metadata(model, versions, described, card)
        features = []
        for column, feature in enumerate(card.features):
            entry: dict[str, Any] = {"name": feature.name, "column": column, "dtype": feature.dtype}
            if feature.categories is not None:
                entry["categories"] = feature.categories
            entry["nullable"] = feature.nullable
            features.append(entry)
        parameters: dict[str, Any] = {
            "version": described,
            "task": card.task,
            "target": card.target,
            "features": json.dumps(features),
            "input_encoding": (
                "one column per feature, in order; a number feature carries its value (null "
                "means missing where nullable), a category feature carries the index of its "
                "value in the feature's categories (null for a missing value). Or, instead of "
                "'input', one input per feature named for it, shape [N], with its raw values: "
                "BYTES for text, BOOL, or numbers"
            ),
            "unknown_categories": card.unknown_categories,
        }
        inputs = [_tensor_meta(INPUT_NAME, [-1, len(card.features)])]
        return _metadata(model, versions, card, inputs, parameters)

    def model_ready(self, model: str, version: str | None = None) -> tuple[bool, str]:
        """(ready, why not): ready once its session is loaded (loading it if needed).

        Raises InvalidName/NotFoundError for an unknown model or version.
        """
        try:
            resolved = self.service.servable_version(model, version)
            tier = self.service.forwarded(model, resolved)
        except NotReadyError as exc:
            return False, str(exc)
        if tier is not None:  # a large model: ready once the container tier has loaded it
            return tier.model_ready(model, resolved)
        try:
            self.service.cache.session(model, resolved)
        except NotReadyError as exc:  # e.g. a file that is not its job's: logged where refused
            return False, str(exc)
        except Exception:  # a graph that cannot load is "not ready", logged for us
            logger.exception("cannot load the model", extra={"model": model, "version": resolved})
            return False, f"version {resolved!r} of model {model!r} cannot be loaded"
        return True, ""

    # ------------------------------------------------------------------ inference
    def infer(self, model: str, version: str | None, body: str | None) -> dict[str, Any]:
        """Run an inference request (JSON text) and shape the protocol's response.

        Raises InvalidName/NotFoundError, NotReadyError, or an OipError; for a version
        routed to the container tier, its answer (or ContainerAnswered / ContainerUnavailable).
        """
        resolved = self.service.servable_version(model, version)
        tier = self.service.forwarded(model, resolved)
        if tier is not None:
            return tier.infer(model, resolved, body)
        card = self.service.cache.card(model, resolved)
        request = parse_request(body)
        inputs = request["inputs"]
        if card.input is not None and card.tabular_features:
            encoded = by_feature(inputs, card, self.service.cache.inputs(model, resolved))
        elif card.input is not None:
            encoded = media_batch(inputs, card, self.service.cache.inputs(model, resolved))
        elif _sends_codes(inputs, card):
            encoded = to_batch(inputs[0], card)
        else:
            encoded = by_feature(inputs, card, self.service.cache.inputs(model, resolved))
        available = _output_meta(card)["name"]
        wanted = _requested_outputs(request.get("outputs"), available)
        outputs = self.service.run_graph(model, resolved, encoded.batch, encoded.warnings)
        answer: dict[str, Any] = {"model_name": model, "model_version": resolved}
        if "id" in request:
            answer["id"] = request["id"]
        if encoded.warnings is not None:
            # The protocol's parameter values are scalars: the list goes as JSON text.
            answer["parameters"] = {"warnings": json.dumps(encoded.warnings)}
            count_unknown_values(model, resolved)
        answer["outputs"] = [
            {
                "name": name,
                "datatype": FP32,
                "shape": list(outputs[name].shape),
                "data": outputs[name].reshape(-1).astype(float).tolist(),
            }
            for name in wanted
        ]
        return answer


def _metadata(
    model: str,
    versions: list[str],
    card: Card,
    inputs: list[dict[str, Any]],
    parameters: dict[str, Any],
) -> dict[str, Any]:
    """A model's metadata response from its inputs and parameters; a classifier's parameters
    gain its classes and how the probabilities map onto them."""
    if card.task == "classification":
        parameters["classes"] = json.dumps(card.classes)
        parameters["output_encoding"] = "probabilities[:, i] is the probability of classes[i]"
    return {
        "name": model,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": [_output_meta(card)],
        "parameters": parameters,
    }


def _media_metadata(model: str, versions: list[str], version: str, card: Card) -> dict[str, Any]:
    """An image or a text model's metadata: its one BYTES input, what an element holds."""
    spec = card.input
    assert spec is not None
    if spec.kind == "image":
        encoding = (
            f"one element per image: the encoded image (JPEG, PNG or WebP) in base64; it is "
            f"resized to {spec.width}x{spec.height} (width x height) before the model sees it"
        )
    else:
        encoding = (
            f"one element per text: a non-empty UTF-8 string; the model reads its first "
            f"{spec.max_length} tokens"
        )
    parameters: dict[str, Any] = {
        "version": version,
        "task": card.task,
        "target": card.target,
        "input": json.dumps(spec.model_dump(exclude_none=True)),
        "input_encoding": encoding,
    }
    inputs = [{"name": spec.field, "datatype": BYTES, "shape": [-1]}]
    return _metadata(model, versions, card, inputs, parameters)


def _text_table_metadata(
    model: str, versions: list[str], version: str, card: Card
) -> dict[str, Any]:
    """A text model's with tabular columns: one input per feature, the text's BYTES first."""
    spec = card.input
    assert spec is not None
    features = [{"name": spec.field, "dtype": "text"}]
    inputs = [{"name": spec.field, "datatype": BYTES, "shape": [-1]}]
    for feature in card.tabular_features:
        entry: dict[str, Any] = {"name": feature.name, "dtype": feature.dtype}
        if feature.categories is not None:
            entry["categories"] = feature.categories
        entry["nullable"] = feature.nullable
        features.append(entry)
        datatype = FP32 if feature.dtype == "number" else BYTES
        if feature.categories and all(isinstance(c, bool) for c in feature.categories):
            datatype = BOOL
        inputs.append({"name": feature.name, "datatype": datatype, "shape": [-1]})
    parameters: dict[str, Any] = {
        "version": version,
        "task": card.task,
        "target": card.target,
        "input": json.dumps(spec.model_dump(exclude_none=True)),
        "features": json.dumps(features),
        "input_encoding": (
            f"one input per feature, shape [N]: {spec.field!r} holds non-empty UTF-8 strings "
            f"(the model reads their first {spec.max_length} tokens); the others hold raw "
            "values as for a table model: numbers, a category's value (BYTES, BOOL or a "
            "number), null for a missing value"
        ),
        "unknown_categories": card.unknown_categories,
    }
    return _metadata(model, versions, card, inputs, parameters)


def media_batch(inputs: list[dict[str, Any]], card: Card, encoder: InstanceEncoder) -> Encoded:
    """An image or a text model's batch from its one BYTES input (see the module docstring),
    encoded by the version's `encoder` as the predict API encodes its values."""
    spec = card.input
    assert spec is not None
    contract = f"the model takes one input {spec.field!r}, {BYTES} [-1]: " + (
        "base64 images" if spec.kind == "image" else "UTF-8 strings"
    )
    names = [t["name"] for t in inputs]
    if names != [spec.field]:
        raise InvalidTensor(f"inputs {', '.join(map(repr, names[:MAX_REPORTED]))}: {contract}")
    tensor = inputs[0]
    if tensor["datatype"] != BYTES:
        raise InvalidTensor(f"input datatype {tensor['datatype']!r} is not accepted: {contract}")
    values = _column(tensor)
    try:
        return encoder.encode(values)
    except InvalidInstances as exc:
        message = str(exc).removeprefix("invalid instances: ")
        raise InvalidTensor(f"invalid input: {message}") from None
    except TooManyInstances as exc:
        raise TooManyRows(str(exc)) from None


# ---------------------------------------------------------------------- request parsing
def parse_request(body: str | None) -> dict[str, Any]:
    """The inference request object, its structure checked.

    Raises MalformedRequest (400) or api.UnreadableBody (400: nested too deep, an integer too
    long).
    """
    if not body or not body.strip():
        raise MalformedRequest('a JSON inference request body is required: {"inputs": [...]}')
    try:
        request = api.parse_json(body)  # api.UnreadableBody goes to the routes as it is
    except json.JSONDecodeError as exc:
        raise MalformedRequest(
            f"request body is not valid JSON: {exc.msg} at character {exc.pos}"
        ) from None
    if not isinstance(request, dict):
        raise MalformedRequest("the inference request must be a JSON object")
    if "id" in request and not isinstance(request["id"], str):
        raise MalformedRequest("id must be a string")
    if "parameters" in request and not isinstance(request["parameters"], dict):
        raise MalformedRequest("parameters must be an object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise MalformedRequest("inputs must be a non-empty list of tensors")
    seen: set[str] = set()
    for i, tensor in enumerate(inputs):
        _check_tensor(tensor, f"inputs[{i}]")
        if tensor["name"] in seen:
            raise MalformedRequest(f"input {tensor['name']!r} is given more than once")
        seen.add(tensor["name"])
    outputs = request.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise MalformedRequest('outputs must be a list of {"name": ...} objects')
        for i, output in enumerate(outputs):
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise MalformedRequest(f"outputs[{i}] must be an object with a string name")
    return request


def _check_tensor(tensor: Any, where: str) -> None:
    if not isinstance(tensor, dict):
        raise MalformedRequest(f"{where} must be a tensor object {{name, shape, datatype, data}}")
    for key, kind, what in (
        ("name", str, "a string"),
        ("datatype", str, "a string"),
        ("shape", list, "a list of sizes"),
        ("data", list, "a list of values"),
    ):
        if key not in tensor:
            raise MalformedRequest(f"{where}: {key} is required")
        if not isinstance(tensor[key], kind):
            raise MalformedRequest(f"{where}: {key} must be {what}")
    shape = tensor["shape"]
    if not all(type(d) is int and 0 <= d <= MAX_SIZE for d in shape):
        raise MalformedRequest(
            f"{where}: shape must hold non-negative int64 sizes (up to 2^63-1), got {_shown(shape)}"
        )


def _sends_codes(inputs: list[dict[str, Any]], card: Card) -> bool:
    """Whether the request sends the graph's own tensor `input` rather than one per feature."""
    if len(inputs) != 1 or inputs[0]["name"] != INPUT_NAME:
        return False
    if card.feature_names != [INPUT_NAME]:
        return True
    # The model's only feature is called `input`: its own input is one column of values.
    tensor = inputs[0]
    return tensor["datatype"] == FP32 and len(tensor["shape"]) == 2 and tensor["shape"][1] == 1


def _inputs_contract(card: Card) -> str:
    names = ", ".join(map(repr, card.feature_names[:10]))
    more = f" and {len(card.features) - 10} more" if len(card.features) > 10 else ""
    if card.input is not None:  # text with tabular columns: no tensor of its own is taken
        return f"the model takes one input per feature: {names}{more} (GET /v2/models/<name>)"
    return (
        f"the model takes one input {INPUT_NAME!r} ({FP32} [-1, {len(card.features)}]), or one "
        f"input per feature: {names}{more} (GET /v2/models/<name> describes them)"
    )


def by_feature(inputs: list[dict[str, Any]], card: Card, schema: InstanceEncoder) -> Encoded:
    """The batch from one input per feature, each [N] or [N, 1] of raw values, encoded as the
    predict API encodes rows (`schema`, the version's InputSchema, or a text model's
    TextTableInput, which takes rows in the card's feature order): warnings included."""
    features = card.feature_names
    names = [t["name"] for t in inputs]
    unknown = [n for n in names if n not in features]
    if unknown:
        raise InvalidTensor(
            f"unknown input {', '.join(map(repr, unknown[:MAX_REPORTED]))}: "
            + _inputs_contract(card)
        )
    absent = [f for f in features if f not in names]
    if absent:
        shown = ", ".join(map(repr, absent[:MAX_REPORTED]))
        more = f" and {len(absent) - MAX_REPORTED} more" if len(absent) > MAX_REPORTED else ""
        alone = "" if card.input is not None else f", or {INPUT_NAME!r} alone"
        raise InvalidTensor(
            f"no input for feature {shown}{more}: send one input per feature{alone}"
        )
    columns = {t["name"]: _column(t) for t in inputs}
    counts = {len(column) for column in columns.values()}
    if len(counts) > 1:
        first = len(columns[features[0]])
        other = next(f for f in features if len(columns[f]) != first)
        raise InvalidTensor(
            f"the inputs hold different numbers of rows: {first} in {features[0]!r}, "
            f"{len(columns[other])} in {other!r}; every feature's input has one value per row"
        )
    rows = [list(row) for row in zip(*(columns[f] for f in features), strict=True)]
    try:
        return schema.encode(rows)
    except InvalidInstances as exc:
        message = str(exc).removeprefix("invalid instances: ")
        raise InvalidTensor(f"invalid input: {message}") from None


def _column(tensor: dict[str, Any]) -> list[Any]:
    """One feature's values, from its [N] or [N, 1] tensor, each of the tensor's datatype."""
    name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
    if datatype not in NUMBER_TYPES | {BYTES, BOOL}:
        raise InvalidTensor(
            f"input {name!r}: datatype {datatype!r} is not accepted: a feature's input is "
            f"{BYTES} (text), {BOOL} or a number type such as {FP32} or INT64"
        )
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] < 1:
        raise InvalidTensor(
            f"input {name!r}: shape {_shown(shape)} does not fit: a feature's input is [N] or "
            "[N, 1], N >= 1"
        )
    if shape[0] > MAX_ROWS:
        raise TooManyRows(f"{shape[0]} rows in one request; the limit is {MAX_ROWS}")
    values = _flatten(tensor["data"], shape)
    problems = []
    for row, value in enumerate(values):
        if value is not None and not _of_datatype(value, datatype):
            problems.append(f"row {row}, input {name!r}: {_kind(value)} is not {datatype} data")
            if len(problems) > MAX_REPORTED:
                break
    _raise(problems)
    return values


def _of_datatype(value: Any, datatype: str) -> bool:
    if datatype == BYTES:
        return isinstance(value, str)
    if datatype == BOOL:
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _requested_outputs(outputs: list[dict[str, Any]] | None, available: str) -> list[str]:
    if not outputs:
        return [available]
    names = [o["name"] for o in outputs]
    unknown = [n for n in names if n != available]
    if unknown:
        raise InvalidTensor(
            f"unknown output {', '.join(map(repr, unknown))}: the model's output is {available!r}"
        )
    return [available]


def _flatten(data: list[Any], shape: Sequence[int]) -> list[Any]:
    """`data` in row-major order: flat with prod(shape) elements, or nested as the shape."""
    count = math.prod(shape)
    if not data or not isinstance(data[0], list):
        if len(data) != count:
            raise MalformedRequest(
                f"input data holds {len(data)} values but shape {list(shape)} needs {count}"
            )
        if any(isinstance(v, list | dict) for v in data):
            raise MalformedRequest("input data must be flat or nested exactly as the shape")
        return data
    flat: list[Any] = []

    def walk(node: Any, depth: int) -> None:
        if depth == len(shape):
            if isinstance(node, list | dict):
                raise MalformedRequest("input data is nested deeper than its shape")
            flat.append(node)
            return
        if not isinstance(node, list) or len(node) != shape[depth]:
            raise MalformedRequest(
                f"input data is not nested as shape {list(shape)} (dimension {depth})"
            )
        for child in node:
            walk(child, depth + 1)

    walk(data, 0)
    return flat


def to_batch(tensor: dict[str, Any], card: Card) -> Encoded:
    """The float32 [N, F] batch the graph takes, from the request's `input` tensor (category
    codes), with the warnings of the missing values taken as unknown."""
    features = card.features
    n_features = len(features)
    contract = f"{INPUT_NAME!r} is {FP32} [-1, {n_features}]"
    if tensor["datatype"] != FP32:
        raise InvalidTensor(f"input datatype {tensor['datatype']!r} is not accepted: {contract}")
    shape = tensor["shape"]
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
        raise InvalidTensor(
            f"input shape {_shown(shape)} does not fit the model: {contract}, N >= 1"
        )
    if shape[0] > MAX_ROWS:
        raise TooManyRows(f"{shape[0]} rows in one request; the limit is {MAX_ROWS}")
    flat = _flatten(tensor["data"], shape)
    problems: list[str] = []
    nulls: set[int] = set()
    if not all(type(v) is float or type(v) is int for v in flat):
        for index, value in enumerate(flat):
            if type(value) is float or type(value) is int:
                continue
            if value is None:
                nulls.add(index)
                continue
            feature = features[index % n_features]
            problems.append(
                f"row {index // n_features}, feature {feature.name!r}: expected a number, "
                f"got {_kind(value)}"
            )
            if len(problems) > MAX_REPORTED:
                break
        _raise(problems)
        flat = [math.nan if v is None else v for v in flat]
    try:
        values = np.array(flat, dtype=np.float64).reshape(shape[0], n_features)
    except OverflowError:  # an integer beyond float64
        raise InvalidTensor("input holds a number beyond float32's range") from None
    missing = np.isnan(values)  # null, or a NaN literal: both mean missing
    outside = ~missing & ~(np.abs(values) <= FLOAT32_MAX)
    for row, column in np.argwhere(outside)[: MAX_REPORTED + 1]:
        problems.append(
            f"row {row}, feature {features[column].name!r}: {float(values[row, column])!r} is "
            "not a finite float32 number"
        )
    warned: dict[int, list[dict[str, Any]]] = {}
    reject = card.unknown_categories == REJECT
    for column, feature in enumerate(features):
        if len(problems) > MAX_REPORTED:
            break
        absent = np.flatnonzero(missing[:, column])
        if feature.dtype == "category":
            codes = values[:, column]
            n_codes = len(feature.categories or [])
            bad = ~((codes == np.floor(codes)) & (codes >= 0) & (codes < n_codes))
            bad &= ~missing[:, column] & ~outside[:, column]  # reported apart
            for row in np.flatnonzero(bad)[: MAX_REPORTED + 1]:
                problems.append(
                    f"row {row}, feature {feature.name!r}: {float(values[row, column])!r} is not "
                    f"a category code (an integer from 0 to {n_codes - 1}: the index of the "
                    "value in the feature's categories, or null for a missing value)"
                )
            if feature.nullable:
                values[absent, column] = (feature.categories or []).index(MISSING_CATEGORY)
                continue
        elif feature.nullable:
            continue  # the graph fills in the training median
        for row in absent:
            sent = None if row * n_features + column in nulls else math.nan
            if feature.dtype == "category" and not reject:
                warned.setdefault(int(row), []).append(missing_value_warning(feature.name, sent))
                continue
            if feature.dtype == "category":
                why = "is not accepted: the feature had no missing values in training"
            elif sent is None:
                why = "is not accepted: this version fills in no missing number"
            else:
                why = "is not a finite float32 number (this version fills in no missing number)"
            shown = "null" if sent is None else "NaN"
            problems.append(f"row {row}, feature {feature.name!r}: {shown} {why}")
            if len(problems) > MAX_REPORTED:
                break
    _raise(problems)
    batch = values.astype(np.float32)
    if not warned:
        return Encoded(batch)
    return Encoded(batch, [warned.get(row) for row in range(shape[0])])


def _raise(problems: list[str]) -> None:
    if not problems:
        return
    message = "invalid input: " + "; ".join(problems[:MAX_REPORTED])
    if len(problems) > MAX_REPORTED:
        message += "; and more after these"
    raise InvalidTensor(message)


def _shown(value: Any) -> str:
    return _QUOTE.repr(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"string {value[:20]!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
