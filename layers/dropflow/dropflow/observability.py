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
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

SERVICE = "dropflow"
NAMESPACE = "dropflow"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def count_now(name: str, **properties: str) -> None:
    """Publish the Count metric `name` = 1 (dimension service) at once, as one EMF line on
    stdout with `properties` beside it (in the log line, not dimensions).

    For code that runs outside a handler's log_metrics, such as the container tier's server,
    whose stdout reaches CloudWatch Logs (the awslogs driver), where EMF lines become metrics.
    Nothing is printed where POWERTOOLS_METRICS_DISABLED says so (the local runtime, tests).
    """
    if is_metrics_disabled():
        return
    with single_metric(
        name=name,
        unit=MetricUnit.Count,
        value=1,
        namespace=NAMESPACE,
        default_dimensions={"service": SERVICE},
    ) as metric:
        for key, value in properties.items():
            metric.add_metadata(key=key, value=value)


@cache
def _tracer() -> Tracer:
    return Tracer(service=SERVICE)


def __getattr__(name: str) -> Any:
    # PEP 562: `tracer` is built by the first module that imports it, once.
    if name == "tracer":
        return _tracer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
