"""Predict: dropflow's HTTP API behind API Gateway (REST proxy) and the local gateway.

A door: the API itself is dropflow.serving.endpoint (a fast path for valid predictions, the
resolver of dropflow.serving.routes for everything else), which the container tier for large
models (serving/) serves too. Here, versions routed `container` are forwarded there: its 4xx
answers pass through unchanged, and a tier that cannot answer is a 503 with Retry-After.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dropflow import wiring
from dropflow.observability import logger, metrics
from dropflow.serving.endpoint import PredictEndpoint

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Once per execution environment: a bad variable fails the cold start naming it, and warm
# requests reuse the onnxruntime sessions and the cached champion pointers.
SERVICE = wiring.prediction_service()
ENDPOINT = PredictEndpoint(SERVICE)
# The endpoint's parts, for tests and benchmarks that call them one by one.
predicted, resolver, openapi_schema = ENDPOINT.predicted, ENDPOINT.resolver, ENDPOINT.openapi_schema


@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # No tracer here (see dropflow.observability): Lambda's active tracing records the calls.
    return ENDPOINT.handle(event, context)
