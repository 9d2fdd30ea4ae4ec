"""EventPublisher on Amazon EventBridge (PutEvents on one bus)."""

from __future__ import annotations

import json
from typing import Any

import boto3

from dropflow.ports import EventPublishError
from dropflow.vocabulary.events import SOURCE


class EventBridgePublisher:
    def __init__(self, bus_name: str = "default", client: Any | None = None) -> None:
        self.bus_name = bus_name
        self.client = client or boto3.client("events")

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, default=str),
            "EventBusName": self.bus_name,
        }
        try:
            answer = self.client.put_events(Entries=[entry])
        except Exception as exc:  # botocore raises ClientError, endpoint and credential errors
            raise EventPublishError(f"PutEvents on bus {self.bus_name!r} failed: {exc}") from exc
        if answer.get("FailedEntryCount"):
            failed = answer["Entries"][0]
            raise EventPublishError(
                f"PutEvents on bus {self.bus_name!r} refused the event: "
                f"{failed.get('ErrorCode')}: {failed.get('ErrorMessage')}"
            )
