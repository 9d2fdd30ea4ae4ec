"""PromoteModelFunction: a model card was published, so decide on that version.

Trigger (EventBridge): S3 "Object Created" for models/<model>/<version>/card.json (the card is
written last, so the version is complete). Delivery is at least once: promotion records its
decision and a replay returns it unchanged. Promotion also routes the version (the predict
function, or the container tier for large models) and scales the tier out for a container
champion. Then it marks the files of versions no longer kept as retired (S3 tags that the
bucket's lifecycle rule expires), and unmarks the champion's.
"""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from dropflow import wiring
from dropflow.config import settings
from dropflow.errors import InvalidName
from dropflow.observability import logger, metrics, tracer
from dropflow.promotion.gate import card_location, promote

settings()  # fail the cold start, naming the variable, if configuration is wrong


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    key = parse(event=event, model=S3EventNotificationEventBridgeModel).detail.object.key
    location = card_location(key)
    if location is None:
        return {"skipped": f"{key} is not a model card (models/<model>/<version>/card.json)"}
    model, version = location
    try:
        result = promote(
            model,
            version,
            wiring.store(),
            wiring.registry(),
            wiring.events(),
            policy=wiring.route_policy(),
            tier=wiring.container_tier(),
            keep_versions=settings().keep_versions,
        )
    except InvalidName as exc:  # a stray file: retrying cannot help, so answer instead of raising
        logger.warning("card ignored", extra={"key": key, "reason": str(exc)})
        return {"skipped": str(exc)}
    logger.info(
        f"{model} {version} {result.decision}: {result.reason}",
        extra={
            "model": model,
            "route": result.route,
            "scale_out": result.scale_out,
            "retired": result.retired,
            "unretired": result.unretired,
            "retention_error": result.retention_error,
        },
    )
    metrics.add_metric(name=f"Promotion-{result.decision}", unit=MetricUnit.Count, value=1)
    return result.model_dump(mode="json")
