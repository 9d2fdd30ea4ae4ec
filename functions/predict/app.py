"""Predict: dropflow's HTTP API behind API Gateway (REST proxy) and the local gateway.

GET /health, GET /models, GET /models/{name}, POST /models/{name}/predict, the Open
Inference Protocol v2 under /v2 (dropflow.oip; its errors are {"error": "<message>"}), and
GET /openapi.json: the API's OpenAPI description, every status each route answers included. The
routes call dropflow.serving; this file maps HTTP onto it and domain errors onto statuses. A client
mistake is always a 4xx naming the problem; only our own bugs are a (logged) 500.
"""

import json
from functools import cache
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as NoRoute
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from dropflow import __version__, api, oip, services
from dropflow.config import settings
from dropflow.errors import InvalidName, NotFoundError, NotReadyError
from dropflow.names import check_version
from dropflow.observability import logger, metrics, tracer
from dropflow.serving import (
    NOT_READY_RETRY_AFTER,
    InvalidInstances,
    ModelCache,
    PredictionService,
    rows_problem,
)

# Once per execution environment: a bad variable fails the cold start naming it, and warm
# requests reuse the onnxruntime sessions and the cached champion pointers.
SETTINGS = settings()
SERVICE = PredictionService(
    ModelCache(services.store(), services.registry(), champion_ttl=SETTINGS.champion_ttl_seconds)
)
OIP = oip.OpenInference(SERVICE, server_version=__version__)
# Each route and the one method it answers: a known path with another method gets a 405.
HEALTH, MODELS, MODEL, PREDICT = "/health", "/models", "/models/<name>", "/models/<name>/predict"
V2, V2_LIVE, V2_READY = "/v2", "/v2/health/live", "/v2/health/ready"
V2_MODEL, V2_VERSION = "/v2/models/<name>", "/v2/models/<name>/versions/<version>"
V2_MODEL_READY, V2_VERSION_READY = f"{V2_MODEL}/ready", f"{V2_VERSION}/ready"
V2_INFER, V2_VERSION_INFER = f"{V2_MODEL}/infer", f"{V2_VERSION}/infer"
OPENAPI = "/openapi.json"
METHODS = {
    OPENAPI: "GET",
    HEALTH: "GET",
    MODELS: "GET",
    MODEL: "GET",
    PREDICT: "POST",
    V2: "GET",
    V2_LIVE: "GET",
    V2_READY: "GET",
    V2_MODEL: "GET",
    V2_VERSION: "GET",
    V2_MODEL_READY: "GET",
    V2_VERSION_READY: "GET",
    V2_INFER: "POST",
    V2_VERSION_INFER: "POST",
}
ModelName = Annotated[str, Path(description="model name: 1-63 of a-z, 0-9, '-'")]
VersionId = Annotated[str, Path(description="a version id, e.g. v20261123T101500Z-1a2b3c")]

app = APIGatewayRestResolver(
    enable_validation=True,
    # A response that breaks its own model is our bug: a 500, never a 422 blamed on the client.
    response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR,
)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[list[Any]] | list[dict[str, Any]] = Field(
        min_length=1,
        description="rows as lists of feature values (card order) or objects {feature: value}",
    )
    version: str | None = Field(default=None, description="a version id; default: champion")

    @field_validator("instances", mode="wrap")
    @classmethod
    def _one_kind_of_rows(cls, value: Any, handler: Any) -> Any:
        # pydantic's union errors name our annotations; the client needs to hear about rows.
        problem = rows_problem(value)
        if problem:
            raise ValueError(problem)
        return handler(value)

    @field_validator("version")
    @classmethod
    def _version_id(cls, value: str | None) -> str | None:
        return value if value is None else check_version(value)


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    served_by: str

    @model_serializer(mode="wrap")
    def _without_empty_probabilities(self, handler: Any) -> dict[str, Any]:
        # Regression answers carry no probabilities at all rather than a null.
        data = handler(self)
        if data.get("probabilities") is None:
            data.pop("probabilities", None)
        return data


class ModelSummary(BaseModel):
    name: str
    champion: str | None


class ModelList(BaseModel):
    models: list[ModelSummary]


class Feature(BaseModel):
    name: str
    dtype: str
    categories: list[bool | int | str] | None = None
    nullable: bool = False


class ModelDescription(BaseModel):
    """The champion's card in short; the card fields are null while there is no champion."""

    name: str
    ready: bool
    champion: str | None
    versions: int
    route: str
    task: str | None = None
    target: str | None = None
    features: list[Feature] | None = None
    classes: list[Any] | None = None
    metrics: dict[str, Any] | None = None
    created_at: str | None = None


class Health(BaseModel):
    status: str


# ---------------------------------------------------------------------- documented answers
class ErrorDetail(BaseModel):
    code: int
    message: str


class Error(BaseModel):
    """Every error outside /v2."""

    error: ErrorDetail


class OipErrorBody(BaseModel):
    """Every error under /v2, as the protocol shapes it."""

    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, bool | int | float | str]


class OutputTensor(TensorMetadata):
    data: list[float]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


# The OIP inference request, as the protocol states it: the route reads the raw body itself
# (dropflow.oip checks it and answers the protocol's 400s), so it is documented by hand.
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


_BAD_BODY = (
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    HTTPStatus.UNPROCESSABLE_ENTITY,
)
_UNKNOWN, _NOT_READY = HTTPStatus.NOT_FOUND, HTTPStatus.SERVICE_UNAVAILABLE


def _server_ready_answers() -> dict:
    documented = answers(ServerReady, oip_route=True)
    documented[int(_NOT_READY)] = {
        "description": "not ready: the registry does not answer",
        "content": {api.JSON: {"model": ServerReady}},
    }
    return documented


_INFER_ANSWERS = answers(InferResponse, *_BAD_BODY, _UNKNOWN, _NOT_READY, oip_route=True)


# ---------------------------------------------------------------------- routes
@app.get(OPENAPI, include_in_schema=False)
def openapi_json() -> Response[str]:
    return Response(
        status_code=HTTPStatus.OK,
        content_type=content_types.APPLICATION_JSON,
        body=openapi_schema(),
    )


@cache
def openapi_schema() -> str:
    """The API's OpenAPI description (JSON text), built once per execution environment."""
    return app.get_openapi_json_schema(
        title="dropflow",
        version=__version__,
        description="Predictions from dropflow's models: a simple API and the Open Inference "
        "Protocol v2 (under /v2).",
    )


@app.get(HEALTH, responses=answers(None))
def health() -> Health:
    return Health(status="ok")


@app.get(MODELS, responses=answers(None))
def list_models() -> ModelList:
    return ModelList.model_validate({"models": SERVICE.list_models()})


@app.get(MODEL, responses=answers(None, _UNKNOWN))
def describe_model(name: ModelName) -> ModelDescription:
    return ModelDescription.model_validate(SERVICE.describe_model(name))


@app.post(PREDICT, responses=answers(None, *_BAD_BODY, _UNKNOWN, _NOT_READY))
def predict(name: ModelName, request: Annotated[PredictRequest, Body()]) -> PredictResponse:
    answer = SERVICE.predict(name, request.instances, version=request.version)
    return PredictResponse.model_validate(answer)


# ---------------------------------------------------------------------- Open Inference Protocol
def _json(
    body: dict[str, Any], status: HTTPStatus = HTTPStatus.OK, **headers: str
) -> Response[dict[str, Any]]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers=headers or None,
    )


@app.get(V2, responses=answers(ServerMetadata, oip_route=True))
def oip_server_metadata() -> Response[dict[str, Any]]:
    return _json(OIP.server_metadata())


@app.get(V2_LIVE, responses=answers(Live, oip_route=True))
def oip_live() -> Response[dict[str, Any]]:
    return _json({"live": True})


@app.get(V2_READY, responses=_server_ready_answers())
def oip_ready() -> Response[dict[str, Any]]:
    ready = OIP.server_ready()
    return _json({"ready": ready}, HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE)


@app.get(V2_MODEL, responses=answers(ModelMetadata, _UNKNOWN, _NOT_READY, oip_route=True))
def oip_model_metadata(name: ModelName) -> Response[dict[str, Any]]:
    return _json(OIP.model_metadata(name))


@app.get(V2_VERSION, responses=answers(ModelMetadata, _UNKNOWN, _NOT_READY, oip_route=True))
def oip_version_metadata(name: ModelName, version: VersionId) -> Response[dict[str, Any]]:
    return _json(OIP.model_metadata(name, version))


def _model_ready(name: str, version: str | None) -> Response[dict[str, Any]]:
    ready, why = OIP.model_ready(name, version)
    if ready:
        return _json({"name": name, "ready": True})
    retry = str(NOT_READY_RETRY_AFTER)
    return _json(oip.error_body(why), HTTPStatus.SERVICE_UNAVAILABLE, **{"Retry-After": retry})


@app.get(V2_MODEL_READY, responses=answers(ModelReady, _UNKNOWN, _NOT_READY, oip_route=True))
def oip_model_ready(name: ModelName) -> Response[dict[str, Any]]:
    return _model_ready(name, None)


@app.get(V2_VERSION_READY, responses=answers(ModelReady, _UNKNOWN, _NOT_READY, oip_route=True))
def oip_version_ready(name: ModelName, version: VersionId) -> Response[dict[str, Any]]:
    return _model_ready(name, version)


@app.post(V2_INFER, responses=_INFER_ANSWERS, openapi_extensions=INFER_BODY)
def oip_infer(name: ModelName) -> Response[dict[str, Any]]:
    return _json(OIP.infer(name, None, app.current_event.decoded_body))


@app.post(V2_VERSION_INFER, responses=_INFER_ANSWERS, openapi_extensions=INFER_BODY)
def oip_version_infer(name: ModelName, version: VersionId) -> Response[dict[str, Any]]:
    return _json(OIP.infer(name, version, app.current_event.decoded_body))


# ---------------------------------------------------------------------- errors
def error(status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> Response:
    # Under /v2 errors take the protocol's shape; elsewhere dropflow's {"error": {code, message}}.
    if oip.is_oip_path(app.current_event.path):
        body: dict[str, Any] = oip.error_body(message)
    else:
        body = api.error_body(status, message)
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers=headers,
    )


@app.exception_handler(oip.OipError)
def invalid_inference_request(exc: oip.OipError) -> Response:
    return error(exc.status, str(exc))


@app.exception_handler(RequestValidationError)
def invalid_request(exc: RequestValidationError) -> Response:
    syntax = api.json_syntax_error(exc.errors())
    if syntax:
        return error(HTTPStatus.BAD_REQUEST, syntax)
    return error(HTTPStatus.UNPROCESSABLE_ENTITY, api.readable_errors(exc.errors()))


@app.exception_handler(RequestUnsupportedContentType)
def unsupported_media_type(exc: RequestUnsupportedContentType) -> Response:
    return error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send the body as {api.JSON}")


@app.exception_handler(InvalidInstances)
def invalid_instances(exc: InvalidInstances) -> Response:
    return error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc))


@app.exception_handler([NotFoundError, InvalidName])
def not_found(exc: Exception) -> Response:
    # A malformed model name can never exist: for the client it is an unknown model (404),
    # and the message states the naming rule.
    return error(HTTPStatus.NOT_FOUND, str(exc))


@app.exception_handler(NotReadyError)
def not_ready(exc: NotReadyError) -> Response:
    return error(HTTPStatus.SERVICE_UNAVAILABLE, str(exc), {"Retry-After": str(exc.retry_after)})


@app.exception_handler(NoRoute)
def no_route(exc: NoRoute) -> Response:
    method, path = app.current_event.http_method.upper(), app.current_event.path
    allowed = api.allowed_method(METHODS, path)
    if allowed and allowed != method:
        message = f"{method} is not allowed on {path}; use {allowed}"
        return error(HTTPStatus.METHOD_NOT_ALLOWED, message, {"Allow": allowed})
    hint = "GET /v2/models/<name>" if oip.is_oip_path(path) else "GET /models"
    return error(HTTPStatus.NOT_FOUND, f"no route {method} {path}: see {hint}")


@app.exception_handler(ServiceError)
def service_error(exc: ServiceError) -> Response:
    return error(HTTPStatus(exc.status_code), exc.msg)


@app.exception_handler(Exception)
def internal_error(exc: Exception) -> Response:
    # Not the client's doing: log the traceback, answer without internals.
    logger.exception("unhandled error")
    request_id = app.current_event.request_context.request_id
    return error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error (request id {request_id})")


# ---------------------------------------------------------------------- handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = api.json_event(event)  # curl's default Content-Type with a JSON body is JSON
    refused = api.precheck(event)  # size and content type, before anything parses the body
    if refused:
        answer = api.proxy_error(*refused)
        if oip.is_oip_path(event.get("path")):
            answer["body"] = json.dumps(oip.error_body(refused[1]))
        return answer
    return app.resolve(event, context)
