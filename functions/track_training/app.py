"""TrackTrainingFunction: EC2 events about training instances keep their jobs alive.

Triggers (EventBridge, source aws.ec2): "EC2 Instance State-change Notification",
"EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"; and a
schedule, the watchdog, which catches lost events, stuck attempts and orphan instances, frees
the training slots of jobs that died holding one and starts the queued jobs they let start.
An instance that belongs to no dropflow job is ignored.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from dropflow import wiring
from dropflow.config import limit_settings, settings
from dropflow.control.tracker import TrackOutcome
from dropflow.observability import logger, metrics, tracer
from dropflow.ports import InstanceState

# Fail the cold start, naming the variable, if the configuration or the owner's limits are wrong.
settings()
limit_settings().limits()

ENDED = {"shutting-down", "terminated", "stopping", "stopped"}
NOTICES = {
    "EC2 Spot Instance Interruption Warning": "spot-interruption",
    "EC2 Instance Rebalance Recommendation": "rebalance-recommendation",
}


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    envelope = parse(event=event, model=EventBridgeModel)
    if envelope.detail_type == "Scheduled Event":  # the watchdog
        outcomes = wiring.tracker().watchdog()
        for outcome in outcomes:
            record(outcome)
        return {"results": [asdict(o) for o in outcomes]}
    detail = envelope.detail if isinstance(envelope.detail, dict) else {}
    instance_id = str(detail.get("instance-id", ""))
    instance = wiring.compute().describe(instance_id) if instance_id else None
    tracker = wiring.tracker()
    if instance is None:
        outcome = TrackOutcome("ignored", f"instance {instance_id!r} is not a dropflow instance")
    elif envelope.detail_type in NOTICES:
        outcome = tracker.notice(instance, NOTICES[envelope.detail_type])
    elif detail.get("state") in ENDED or instance.state == InstanceState.TERMINATED:
        outcome = tracker.instance_ended(instance)
    else:
        outcome = TrackOutcome(
            "ignored", f"{instance_id} is {detail.get('state')}", instance.job_id
        )
    record(outcome)
    return asdict(outcome)


def record(outcome: TrackOutcome) -> None:
    """Log the outcome and count it; JobsFailed (the FailedJobsAlarm's metric) counts each
    job once, in the call that ended it, and a follow-up run that could not start."""
    metrics.add_metric(name=f"Track-{outcome.action}", unit="Count", value=1)
    failed = outcome.jobs_failed()
    if failed:
        metrics.add_metric(name="JobsFailed", unit="Count", value=failed)
    logger.info(outcome.message, extra={"action": outcome.action, "job_id": outcome.job_id})
