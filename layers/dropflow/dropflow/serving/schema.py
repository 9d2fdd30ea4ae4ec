"""The HTTP API's request and response models and its documented answers (OpenAPI).

Shared by every server of the API: the predict function (API Gateway and the local gateway)
and, later, the container tier for large models. No `from __future__ import annotations`:
powertools resolves these annotations at run time.
"""

from http import HTTPStatus
from numbers import Real
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dropflow.serving import api
from dropflow.vocabulary.names import check_version


class _Lazy(BaseModel):
    # Built on first use, not at import: the predict function's cold start needs only
    # PredictRequest and PredictResponse (its fast path); the rest serve the resolver.
    model_config = ConfigDict(defer_build=True)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[list[Any]] | list[dict[str, Any]] | list[str] = Field(
        min_length=1,
        description="rows as lists of feature values (card order) or objects {feature: value}; "
        "for an image or a text model, objects {field: value} or the values alone (strings: "
        "base64 images, or texts)",
    )
    version: str | None = Field(default=None, description="a version id; default: champion")

    @field_validator("instances", mode="wrap")
    @classmethod
    def _one_kind_of_rows(cls, value: Any, handler: Any) -> Any:
        # pydantic's union errors name our annotations; the client needs to hear about rows.
        problem = rows_problem(value, strings=True)
        if problem:
            raise ValueError(problem)
        return handler(value)

    @field_validator("version")
    @classmethod
    def _version_id(cls, value: str | None) -> str | None:
        return value if value is None else check_version(value)

    def __repr__(self) -> str:
        # Short on purpose: powertools formats the validated request into a debug message on
        # every call, whatever the log level; for 1,000 rows that cost milliseconds.
        return f"PredictRequest(instances=<{len(self.instances)} rows>, version={self.version!r})"


class InputWarning(BaseModel):
    """A value of a row that the model took as unknown rather than refuse the request."""

    feature: str
    value: Any = Field(description="the value sent, text over 40 characters cut short")
    kind: Literal["unknown_category", "missing_value"] = Field(
        description="unknown_category: a category the training rows never had; missing_value: "
        'a missing value (null, NaN, "NA"...) where the training rows had none'
    )
    message: str


def _absent(value: Any) -> bool:
    return value is None


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[Any]
    # Regression answers carry no probabilities at all rather than a null, and answers without
    # a value taken as unknown no warnings (excluded per field: a model serializer costs the
    # predict function's fast path more than the rest of this model together).
    probabilities: list[list[float]] | None = Field(default=None, exclude_if=_absent)
    warnings: list[list[InputWarning] | None] | None = Field(
        default=None,
        exclude_if=_absent,
        description="only when some value was taken as unknown (the spec's "
        "serving.unknown_categories: encode): one entry per row, null for a row without any",
    )
    served_by: str


class ModelSummary(_Lazy):
    name: str
    champion: str | None


class ModelList(_Lazy):
    models: list[ModelSummary]


class Feature(_Lazy):
    name: str
    dtype: str
    categories: list[bool | int | str] | None = None
    nullable: bool = False


class ModelDescription(_Lazy):
    """The champion's card in short; the card fields are null while there is no champion."""

    name: str
    ready: bool
    champion: str | None
    versions: int
    route: str | None = Field(
        description="where the champion is served: lambda, or container (large models)"
    )
    task: str | None = None
    target: str | None = None
    features: list[Feature] | None = None
    classes: list[Any] | None = None
    metrics: dict[str, Any] | None = None
    created_at: str | None = None
    input: dict[str, Any] | None = Field(
        default=None,
        description="an image or a text model's input (the card's input): kind, field, and "
        "height/width or max_length; absent for a table's",
    )
    unknown_categories: Literal["encode", "reject"] | None = Field(
        default=None,
        description="what a category value the training rows never had gets: encode (a "
        "prediction with a warning) or reject (422)",
    )


class LoadedSession(_Lazy):
    model: str
    version: str
    provider: str = Field(description="the onnxruntime execution provider it runs on")


class Health(_Lazy):
    """The predict function's GET /health, open to anyone, says `status` and nothing more; the
    container tier's (reached only inside the VPC, never forwarded) says what it runs on."""

    status: str
    served_by: str | None = Field(
        default=None, exclude_if=_absent, description="container tier only: container"
    )
    providers: list[str] | None = Field(
        default=None,
        exclude_if=_absent,
        description="container tier only: the onnxruntime execution providers a model's "
        "session asks for, in order (CUDAExecutionProvider first where its onnxruntime has it)",
    )
    loaded: list[LoadedSession] | None = Field(
        default=None,
        exclude_if=_absent,
        description="container tier only: the models it holds loaded now, each with the "
        "provider it runs on",
    )


# ---------------------------------------------------------------------- documented answers
class ErrorDetail(_Lazy):
    code: int
    message: str


class Error(_Lazy):
    """Every error outside /v2."""

    error: ErrorDetail


class OipErrorBody(_Lazy):
    """Every error under /v2, as the protocol shapes it."""

    error: str


class ServerMetadata(_Lazy):
    name: str
    version: str
    extensions: list[str]


class Live(_Lazy):
    live: bool


class ServerReady(_Lazy):
    ready: bool


class ModelReady(_Lazy):
    name: str
    ready: bool


class TensorMetadata(_Lazy):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_Lazy):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, bool | int | float | str]


class OutputTensor(TensorMetadata):
    data: list[float]


class InferResponse(_Lazy):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


# The OIP inference request, as the protocol states it: the route reads the raw body itself
# (dropflow.serving.oip checks it and answers the protocol's 400s), so it is documented by hand.
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string"},
                    "data": {"type": "array"},
                    "parameters": {"type": "object"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {api.JSON: {"schema": INFER_REQUEST}},
    }
}


def answers(ok: type[BaseModel] | None, *errors: HTTPStatus, oip_route: bool = False) -> dict:
    """A route's documented answers: 200 (`ok`, else its return annotation) and `errors`,
    each with its error body; 500 is always possible."""
    error_model = OipErrorBody if oip_route else Error
    documented: dict[int, Any] = {200: {"description": "OK"}}
    if ok is not None:
        documented[200]["content"] = {api.JSON: {"model": ok}}
    for status in (*errors, HTTPStatus.INTERNAL_SERVER_ERROR):
        documented[int(status)] = {
            "description": status.phrase,
            "content": {api.JSON: {"model": error_model}},
        }
    return documented


BAD_BODY = (
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    HTTPStatus.UNPROCESSABLE_ENTITY,
)
UNKNOWN, NOT_READY = HTTPStatus.NOT_FOUND, HTTPStatus.SERVICE_UNAVAILABLE


def _server_ready_answers() -> dict:
    documented = answers(ServerReady, oip_route=True)
    documented[int(NOT_READY)] = {
        "description": "not ready: the registry does not answer",
        "content": {api.JSON: {"model": ServerReady}},
    }
    return documented


SERVER_READY_ANSWERS = _server_ready_answers()
INFER_ANSWERS = answers(InferResponse, *BAD_BODY, UNKNOWN, NOT_READY, oip_route=True)


def rows_problem(instances: Any, *, strings: bool = False) -> str | None:
    """Why `instances` is not a non-empty list of rows all of one kind, or None when it is.

    `strings`: rows may also be strings, all of them (an image or a text model's values).
    The message reads after "instances: " (the request field) or "invalid instances: ".
    """
    if not isinstance(instances, list | tuple):
        return f"must be a list of rows, got {describe_value(instances)}"
    if not instances:
        return "must not be empty: send at least one row"
    kinds = (list | tuple | dict | str) if strings else (list | tuple | dict)
    first = _row_kind(instances[0])
    for i, row in enumerate(instances):
        if not isinstance(row, kinds):
            also = " (or, for an image or a text model, a string)" if strings else ""
            return (
                f"row {i} is {describe_value(row)}: each row must be a list of feature values "
                f"or an object {{feature: value}}{also}"
            )
        if _row_kind(row) != first:
            return (
                f"row {i} is {describe_value(row)} but row 0 is {describe_value(instances[0])}: "
                f"send all rows as {_ROW_KINDS[first]}"
            )
    return None


_ROW_KINDS = {"list": "lists", "object": "objects", "string": "strings"}


def _row_kind(row: Any) -> str:
    return "object" if isinstance(row, dict) else "string" if isinstance(row, str) else "list"


def describe_value(value: Any) -> str:
    """How a value reads in an error message: "null", "a list", "string 'abc'", ..."""
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
