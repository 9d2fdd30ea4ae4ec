"""The predict function's routes: every request that functions/predict/app.py does not
answer on its fast path (a valid prediction served in process) comes here.

GET /health, GET /models, GET /models/{name}, POST /models/{name}/predict, the Open
Inference Protocol v2 under /v2 (dropflow.serving.oip; its errors are {"error": "<message>"}), and
GET /openapi.json: the API's OpenAPI description, every status each route answers included. The
routes call dropflow.serving.service; this file maps HTTP onto it and domain errors onto statuses.
A client
mistake is always a 4xx naming the problem; only our own bugs are a (logged) 500.

app.py loads this module on the first request that needs it: powertools' event handler and its
OpenAPI machinery are a fair part of a cold start that a prediction does not need.
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

from dropflow import __version__
from dropflow.errors import InvalidName, NotFoundError, NotReadyError
from dropflow.observability import logger
from dropflow.serving import api, oip
from dropflow.serving.forwarding import ContainerAnswered
from dropflow.serving.schema import (
    BAD_BODY,
    INFER_ANSWERS,
    INFER_BODY,
    NOT_READY,
    SERVER_READY_ANSWERS,
    UNKNOWN,
    Health,
    Live,
    ModelDescription,
    ModelList,
    ModelMetadata,
    ModelReady,
    PredictRequest,
    PredictResponse,
    ServerMetadata,
    answers,
)
from dropflow.serving.service import (
    NOT_READY_RETRY_AFTER,
    InvalidInstances,
    PredictionService,
    TooManyInstances,
    UnsupportedMedia,
)

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


def openapi_description(app: APIGatewayRestResolver) -> str:
    """The OpenAPI description (JSON text) of the resolver `build` returned."""
    described = json.loads(
        app.get_openapi_json_schema(
            title="dropflow",
            version=__version__,
            description="Predictions from dropflow's models: a simple API and the Open "
            "Inference Protocol v2 (under /v2).",
        )
    )
    # The predict route also takes one raw image (an image model's), which the endpoint turns
    # into the JSON request it stands for before the route sees it: powertools describes the
    # JSON body only.
    body = described["paths"]["/models/{name}/predict"]["post"]["requestBody"]
    for media_type in sorted(api.IMAGE_MEDIA_TYPES):
        body["content"][media_type] = {"schema": {"type": "string", "format": "binary"}}
    return json.dumps(described)


def build(service: PredictionService) -> APIGatewayRestResolver:
    """The resolver of every route, answering from `service` (built once per execution
    environment)."""
    oip_service = oip.OpenInference(service, server_version=__version__)
    app = APIGatewayRestResolver(
        enable_validation=True,
        # A response that breaks its own model is our bug: a 500, never a 422 blamed on the client.
        response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR,
        # Every body the routes read goes through the API's one JSON reader (the Open
        # Inference Protocol's too): what it refuses is a 400 below, never a RecursionError.
        json_body_deserializer=api.parse_json,
    )

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
        """The API's OpenAPI description (JSON text), built once per resolver."""
        return openapi_description(app)

    @app.get(HEALTH, responses=answers(None))
    def health() -> Health:
        return Health.model_validate(service.health())

    @app.get(MODELS, responses=answers(None))
    def list_models() -> ModelList:
        return ModelList.model_validate({"models": service.list_models()})

    @app.get(MODEL, responses=answers(None, UNKNOWN))
    def describe_model(name: ModelName) -> ModelDescription:
        return ModelDescription.model_validate(service.describe_model(name))

    @app.post(PREDICT, responses=answers(None, *BAD_BODY, UNKNOWN, NOT_READY))
    def predict(name: ModelName, request: Annotated[PredictRequest, Body()]) -> PredictResponse:
        # A raw image body comes as the JSON request it stands for (api.image_event).
        media_type = app.current_event.raw_event.get(api.RAW_IMAGE_EVENT_KEY)
        answer = service.predict(
            name, request.instances, version=request.version, media_type=media_type
        )
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
        return _json(oip_service.server_metadata())

    @app.get(V2_LIVE, responses=answers(Live, oip_route=True))
    def oip_live() -> Response[dict[str, Any]]:
        return _json({"live": True})

    @app.get(V2_READY, responses=SERVER_READY_ANSWERS)
    def oip_ready() -> Response[dict[str, Any]]:
        ready = oip_service.server_ready()
        return _json({"ready": ready}, HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE)

    @app.get(V2_MODEL, responses=answers(ModelMetadata, UNKNOWN, NOT_READY, oip_route=True))
    def oip_model_metadata(name: ModelName) -> Response[dict[str, Any]]:
        return _json(oip_service.model_metadata(name))

    @app.get(V2_VERSION, responses=answers(ModelMetadata, UNKNOWN, NOT_READY, oip_route=True))
    def oip_version_metadata(name: ModelName, version: VersionId) -> Response[dict[str, Any]]:
        return _json(oip_service.model_metadata(name, version))

    def _model_ready(name: str, version: str | None) -> Response[dict[str, Any]]:
        ready, why = oip_service.model_ready(name, version)
        if ready:
            return _json({"name": name, "ready": True})
        retry = str(NOT_READY_RETRY_AFTER)
        return _json(oip.error_body(why), HTTPStatus.SERVICE_UNAVAILABLE, **{"Retry-After": retry})

    @app.get(V2_MODEL_READY, responses=answers(ModelReady, UNKNOWN, NOT_READY, oip_route=True))
    def oip_model_ready(name: ModelName) -> Response[dict[str, Any]]:
        return _model_ready(name, None)

    @app.get(V2_VERSION_READY, responses=answers(ModelReady, UNKNOWN, NOT_READY, oip_route=True))
    def oip_version_ready(name: ModelName, version: VersionId) -> Response[dict[str, Any]]:
        return _model_ready(name, version)

    @app.post(V2_INFER, responses=INFER_ANSWERS, openapi_extensions=INFER_BODY)
    def oip_infer(name: ModelName) -> Response[dict[str, Any]]:
        return _json(oip_service.infer(name, None, app.current_event.decoded_body))

    @app.post(V2_VERSION_INFER, responses=INFER_ANSWERS, openapi_extensions=INFER_BODY)
    def oip_version_infer(name: ModelName, version: VersionId) -> Response[dict[str, Any]]:
        return _json(oip_service.infer(name, version, app.current_event.decoded_body))

    # ---------------------------------------------------------------------- errors
    def error(status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> Response:
        # Under /v2 errors take the protocol's shape; elsewhere {"error": {code, message}}.
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

    @app.exception_handler(api.UnreadableBody)
    def unreadable_body(exc: api.UnreadableBody) -> Response:
        # A fuzzer's or an attacker's body, not our bug: a line for whoever watches the logs,
        # without a traceback. The route's resource, not the path: nothing the client wrote
        # goes into the log (the logger writes UTF-8, which a lone surrogate would break).
        event = app.current_event
        logger.warning(
            f"refused with 400: {exc}",
            extra={"method": event.get("httpMethod"), "resource": event.get("resource")},
        )
        return error(HTTPStatus.BAD_REQUEST, str(exc))

    @app.exception_handler(RequestUnsupportedContentType)
    def unsupported_media_type(exc: RequestUnsupportedContentType) -> Response:
        return error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send the body as {api.JSON}")

    @app.exception_handler(InvalidInstances)
    def invalid_instances(exc: InvalidInstances) -> Response:
        return error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc))

    @app.exception_handler(TooManyInstances)
    def too_many_instances(exc: TooManyInstances) -> Response:
        return error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc))

    @app.exception_handler(UnsupportedMedia)
    def unsupported_media(exc: UnsupportedMedia) -> Response:
        return error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, str(exc))

    @app.exception_handler([NotFoundError, InvalidName])
    def not_found(exc: Exception) -> Response:
        # A malformed model name can never exist: for the client it is an unknown model (404),
        # and the message states the naming rule.
        return error(HTTPStatus.NOT_FOUND, str(exc))

    @app.exception_handler(ContainerAnswered)
    def container_answered(exc: ContainerAnswered) -> Response:
        # The container tier judged the request with this same code: its answer stands as it is.
        return Response(
            status_code=exc.status,
            content_type=exc.content_type,
            body=exc.body.decode("utf-8", errors="replace"),
            headers=exc.headers or None,
        )

    @app.exception_handler(NotReadyError)
    def not_ready(exc: NotReadyError) -> Response:
        return error(
            HTTPStatus.SERVICE_UNAVAILABLE, str(exc), {"Retry-After": str(exc.retry_after)}
        )

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

    return app
