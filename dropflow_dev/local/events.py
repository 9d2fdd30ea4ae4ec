"""AWS-shaped events the local runtime sends to the same handlers EventBridge would call.

Locally, the runtime plays EventBridge: a settled file in the bucket directory becomes an S3
"Object Created" event, an ended child process an EC2 state-change, the timer a Scheduled Event.
"""

from __future__ import annotations

import uuid
from typing import Any

from dropflow.vocabulary.clock import iso_utc

ACCOUNT = "000000000000"
REGION = "local"


def _envelope(source: str, detail_type: str, detail: dict[str, Any], resources: list[str]):
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": iso_utc(),
        "region": REGION,
        "resources": resources,
        "detail": detail,
    }


def s3_object_created(bucket: str, key: str, size: int, etag: str) -> dict[str, Any]:
    return _envelope(
        "aws.s3",
        "Object Created",
        {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": key, "size": size, "etag": etag, "sequencer": "0"},
            "request-id": uuid.uuid4().hex[:16].upper(),
            "requester": ACCOUNT,
            "reason": "PutObject",
        },
        [f"arn:aws:s3:::{bucket}"],
    )


def ec2_state_change(instance_id: str, state: str) -> dict[str, Any]:
    return _envelope(
        "aws.ec2",
        "EC2 Instance State-change Notification",
        {"instance-id": instance_id, "state": state},
        [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"],
    )


def scheduled(rule: str = "dropflow-local-schedule") -> dict[str, Any]:
    return _envelope(
        "aws.events",
        "Scheduled Event",
        {},
        [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"],
    )
