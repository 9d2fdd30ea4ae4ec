"""LaunchTrainingFunction: a dataset drop or the schedule asks for training.

Triggers (EventBridge): S3 "Object Created" under datasets/, and a Scheduled Event.
Duplicates are harmless: the launcher claims each (model, data version) exactly once. A spec
outside the stack owner's limits fails its job before any launch, and a job beyond the cap on
jobs at once waits in the training queue (dropflow.control.launcher).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import (
    EventBridgeModel,
    S3EventNotificationEventBridgeDetailModel,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from dropflow import wiring
from dropflow.config import limit_settings, settings
from dropflow.errors import InvalidName
from dropflow.observability import logger, metrics, tracer
from dropflow.vocabulary.datasets import model_of_dataset_key

# Fail the cold start, naming the variable, if the configuration or the owner's limits are wrong.
settings()
limit_settings().limits()


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    envelope = parse(event=event, model=EventBridgeModel)
    if envelope.source == "aws.s3":
        detail = S3EventNotificationEventBridgeDetailModel.model_validate(envelope.detail)
        model = model_of_dataset_key(detail.object.key)
        if model is None:
            return {"results": [], "skipped": f"{detail.object.key} is not under datasets/<model>/"}
        try:
            outcome = wiring.launcher().request_training(model, trigger="drop")
        except InvalidName as exc:
            logger.warning("dataset drop ignored", extra={"key": detail.object.key})
            return {"results": [], "skipped": str(exc)}
        outcomes = [outcome]
    else:  # the schedule: models whose spec schedule is due and whose data changed
        outcomes = wiring.launcher().scheduled_training()
    for outcome in outcomes:
        metrics.add_metric(name=f"Launch-{outcome.action}", unit="Count", value=1)
        failed = outcome.jobs_failed()  # jobs that could not start: the FailedJobsAlarm's
        if failed:
            metrics.add_metric(name="JobsFailed", unit="Count", value=failed)
        logger.info(outcome.message, extra={"model": outcome.model, "action": outcome.action})
    return {"results": [asdict(o) for o in outcomes]}
