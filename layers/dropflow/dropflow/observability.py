"""Logger, Metrics and Tracer, created once and shared by every handler and the job.

Stack them on a handler in this order: logger (correlation id) -> metrics (cold start) ->
tracer. Outside Lambda the tracer is disabled and metrics go to stdout as EMF only when
POWERTOOLS_METRICS_DISABLED is not set (the local runtime sets it).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "dropflow"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="dropflow", service=SERVICE)
tracer = Tracer(service=SERVICE)
