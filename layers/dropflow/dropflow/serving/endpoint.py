"""dropflow's HTTP API over API Gateway REST proxy events, for the predict function and the
container tier alike: `PredictEndpoint(service).handle(event, context)` is the proxy answer.

A valid `POST /models/{name}/predict` that this process serves is answered on a fast path;
every other request (the other routes, the Open Inference Protocol under /v2, every error)
goes to the resolver of dropflow.serving.routes, built on the first request that needs it.
Before either, the refusals due before any parsing (dropflow.serving.api.precheck: size,
content type). The predict function (functions/predict/app.py) calls `handle` from its
Lambda handler; the container tier's ASGI server (serving/) from each HTTP request.
"""

from __future__ import annotations

import gc
import importlib
import json
import threading
from http import HTTPStatus
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dropflow.observability import logger
from dropflow.serving import api
from dropflow.serving.schema import PredictRequest, PredictResponse

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

    from dropflow.serving.service import PredictionService

# powertools keeps the request being resolved on its router class, shared by every resolver
# of the process: one resolution at a time per process. A Lambda environment has one request
# at a time anyway; the container tier's threads wait here (the fast path does not).
_ONE_RESOLUTION_AT_A_TIME = threading.Lock()
_BUILDING = threading.Lock()


class PredictEndpoint:
    """The API answering from `service`; safe to call from several threads."""

    def __init__(self, service: PredictionService) -> None:
        self.service = service
        self._resolver: APIGatewayRestResolver | None = None
        self._settled = False

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """The proxy answer (statusCode, headers, body) to one API Gateway REST proxy event.

        A client's mistake is a 4xx naming it, under /v2 in the protocol's error shape; only
        our own bugs are a (logged) 500.
        """
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
        event = api.image_event(event)  # a raw image body is the JSON request it stands for
        answer = self.predicted(event) or self.resolve(event, context)
        if not self._settled:
            self._settle()
        return answer

    def predicted(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The 200 answer to a valid `POST /models/{name}/predict` that this process serves,
        or None: then the resolver answers it, as it answers every other request.

        Predictions are what clients call this API for, and on a small model the resolver's
        routing, event wrapping and validation cost several times the prediction itself. This
        path checks the body with the route's own PredictRequest and the answer with its
        PredictResponse. Whatever it cannot answer with a 200 (a bad request, an unknown
        model, a version routed to the container tier) has had no side effect yet, so the
        resolver takes the request from the start and words the answer: one place for every
        error.
        """
        match = api.PREDICT_PATH.fullmatch(event.get("path") or "")
        if match is None or event.get("httpMethod") != "POST" or event.get("isBase64Encoded"):
            return None
        try:
            request = PredictRequest.model_validate_json(event.get("body") or "")
            answer = self.service.predict_in_process(
                match[1],
                request.instances,
                version=request.version,
                media_type=event.get(api.RAW_IMAGE_EVENT_KEY),
            )
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

    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """The resolver's answer to `event` (no precheck, no fast path)."""
        resolver = self.resolver()
        with _ONE_RESOLUTION_AT_A_TIME:
            return resolver.resolve(event, context)

    def resolver(self) -> APIGatewayRestResolver:
        """The resolver of dropflow.serving.routes answering from the service: built once,
        when first needed."""
        if self._resolver is None:
            with _BUILDING:
                if self._resolver is None:
                    self._settled = False  # what it builds joins the settled heap after this
                    self._resolver = _routes().build(self.service)
        return self._resolver

    def openapi_schema(self) -> str:
        """The API's OpenAPI description (JSON text), as GET /openapi.json answers it."""
        return _routes().openapi_description(self.resolver())

    def _settle(self) -> None:
        """After the first answer, what the cold start and that request built (modules, the
        resolver, the model's session) lives as long as the process: move it out of the
        garbage collector's reach, so that the full collections a 1,000-row request sets off
        do not walk all of it every time (~100 ms each in the benchmark without this)."""
        gc.freeze()
        self._settled = True


def _routes() -> ModuleType:
    # Imported when first needed: powertools' event handler and its OpenAPI machinery are a
    # fair part of a cold start that a prediction does not need.
    return importlib.import_module("dropflow.serving.routes")
