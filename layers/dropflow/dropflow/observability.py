"""Logger, Metrics and Tracer, created once and shared by every handler and the job.

Stack them on a handler in this order: logger (correlation id) -> metrics (cold start) ->
tracer. Outside Lambda the tracer is disabled and metrics go to stdout as EMF only when
POWERTOOLS_METRICS_DISABLED is not set (the local runtime sets it).

The tracer is made on first use (`from dropflow.observability import tracer`): creating it
loads the X-Ray SDK, and botocore with it, about 0.2 s of a cold start. The predict function,
whose cold start a client waits for, takes no tracer: Lambda's active tracing still records
its invocations, and a warm request there makes no call worth a subsegment.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "dropflow"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="dropflow", service=SERVICE)


@cache
def _tracer() -> Tracer:
    return Tracer(service=SERVICE)


def __getattr__(name: str) -> Any:
    # PEP 562: `tracer` is built by the first module that imports it, once.
    if name == "tracer":
        return _tracer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
