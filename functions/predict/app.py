"""Predict: dropflow's HTTP API behind API Gateway (REST proxy) and the local gateway.

A valid `POST /models/{name}/predict` served by this process is answered here, on a fast
path; every other request (the other routes, the Open Inference Protocol under /v2, every
error) goes to the resolver in dropflow.serving.routes, which is built on the first request that
needs it.
See dropflow.serving.routes for the API itself.

The same file serves the container tier for large models (serving/server.py runs it with
DROPFLOW_SERVED_BY=container). In the function, versions routed `container` are forwarded
there: its 4xx answers pass through unchanged, and a tier that cannot answer is a 503 with
Retry-After.
"""

from __future__ import annotations

import gc
import importlib
import json
import re
from functools import cache
from http import HTTPStatus
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dropflow import wiring
from dropflow.config import settings
from dropflow.observability import logger, metrics
from dropflow.serving import api
from dropflow.serving.schema import PredictRequest, PredictResponse
from dropflow.serving.service import ModelCache, PredictionService

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Once per execution environment: a bad variable fails the cold start naming it, and warm
# requests reuse the onnxruntime sessions and the cached champion pointers.
SETTINGS = settings()
SERVICE = PredictionService(
    ModelCache(
        wiring.store(),
        wiring.registry(),
        champion_ttl=SETTINGS.champion_ttl_seconds,
        budget_mb=SETTINGS.model_cache_mb,
        memory_factor=SETTINGS.session_memory_factor,
    ),
    tier=wiring.container_client(),
    served_by=SETTINGS.served_by,
)


# ---------------------------------------------------------------------- handler
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # No tracer here (see dropflow.observability): Lambda's active tracing records the calls.
    # The correlation id is API Gateway's request id, read directly: the logger's JMESPath
    # lookup of the same field costs more than a prediction's input checks.
    logger.set_correlation_id((event.get("requestContext") or {}).get("requestId"))
    event = api.json_event(event)  # curl's default Content-Type with a JSON body is JSON
    refused = api.precheck(event)  # size and content type, before anything parses the body
    if refused:
        from dropflow.serving import (
            oip,  # the protocol's module is for the resolver; refusals are rare
        )

        answer = api.proxy_error(*refused)
        if oip.is_oip_path(event.get("path")):
            answer["body"] = json.dumps(oip.error_body(refused[1]))
        return answer
    answer = predicted(event) or resolver().resolve(event, context)
    if not _settled:
        _settle()
    return answer


PREDICT_PATH = re.compile(r"/models/([^/]+)/predict")


def predicted(event: dict[str, Any]) -> dict[str, Any] | None:
    """The 200 answer to a valid `POST /models/{name}/predict` that this process serves, or
    None: then the resolver answers it, as it answers every other request.

    Predictions are what clients call this API for, and on a small model the resolver's
    routing, event wrapping and validation cost several times the prediction itself. This
    path checks the body with the route's own PredictRequest and the answer with its
    PredictResponse. Whatever it cannot answer with a 200 (a bad request, an unknown model, a
    version routed to the container tier) has had no side effect yet, so the resolver takes
    the request from the start and words the answer: one place for every error.
    """
    match = PREDICT_PATH.fullmatch(event.get("path") or "")
    if match is None or event.get("httpMethod") != "POST" or event.get("isBase64Encoded"):
        return None
    try:
        request = PredictRequest.model_validate_json(event.get("body") or "")
        answer = SERVICE.predict_in_process(match[1], request.instances, version=request.version)
        if answer is None:
            return None
        body = PredictResponse.model_validate(answer).model_dump_json()
    except Exception:  # see the docstring: the resolver answers, and logs if it is ours
        return None
    return {
        "statusCode": HTTPStatus.OK.value,
        "multiValueHeaders": {"Content-Type": [api.JSON]},
        "body": body,
        "isBase64Encoded": False,
    }


@cache
def resolver() -> APIGatewayRestResolver:
    """The resolver of dropflow.serving.routes, answering from SERVICE: built once, when first
    needed."""
    global _settled
    _settled = False  # what it builds joins the settled heap after this answer
    return _routes().build(SERVICE)


@cache
def _routes() -> ModuleType:
    # Imported when first needed: powertools' event handler and its OpenAPI machinery are a
    # fair part of a cold start that a prediction does not need.
    return importlib.import_module("dropflow.serving.routes")


def openapi_schema() -> str:
    """The API's OpenAPI description (JSON text), as GET /openapi.json answers it."""
    return _routes().openapi_description(resolver())


_settled = False


def _settle() -> None:
    """After the first answer, what the cold start and that request built (modules, the
    resolver, the model's session) lives as long as the execution environment: move it out of
    the garbage collector's reach, so that the full collections a 1,000-row request sets off
    do not walk all of it every time (~100 ms each in the benchmark without this)."""
    global _settled
    gc.freeze()
    _settled = True
