"""The EventBridge EventPublisher against moto: events land on the bus with source dropflow."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from dropflow import wiring
from dropflow.adapters.aws.eventbridge_events import EventBridgePublisher
from dropflow.ports import EventPublishError
from dropflow.vocabulary.events import PROMOTED


@pytest.fixture
def aws():
    with mock_aws():
        yield (
            boto3.client("events", region_name="us-east-1"),
            boto3.client("sqs", region_name="us-east-1"),
        )


def capture(events, sqs, bus: str) -> str:
    """An SQS queue receiving every dropflow event on `bus`; returns its URL."""
    url = sqs.create_queue(QueueName="captured")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps({"source": ["dropflow"]}))
    events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return url


def test_put_events_delivers_source_detail_type_and_detail(aws):
    events, sqs = aws
    events.create_event_bus(Name="dropflow-bus")
    url = capture(events, sqs, "dropflow-bus")

    EventBridgePublisher("dropflow-bus", client=events).publish(
        PROMOTED, {"model": "m", "version": "v1", "reason": "first", "metrics": {"accuracy": 1}}
    )

    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    sent = json.loads(messages[0]["Body"])
    assert (sent["source"], sent["detail-type"]) == ("dropflow", PROMOTED)
    assert sent["detail"]["model"] == "m" and sent["detail"]["metrics"] == {"accuracy": 1}


def test_a_failed_put_is_an_event_publish_error():
    class Refusing:
        def put_events(self, Entries):
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "X", "ErrorMessage": "no"}]}

    with pytest.raises(EventPublishError, match="refused the event: X: no"):
        EventBridgePublisher("b", client=Refusing()).publish(PROMOTED, {})


def test_services_choose_eventbridge_for_an_s3_store(monkeypatch, tmp_path):
    monkeypatch.setenv("DROPFLOW_STORE_URL", "s3://bucket")
    monkeypatch.setenv("DROPFLOW_REGISTRY_URL", "dynamodb://table")
    monkeypatch.setenv("DROPFLOW_EVENT_BUS", "my-bus")
    wiring.reset()
    try:
        with mock_aws():
            publisher = wiring.events()
        assert isinstance(publisher, EventBridgePublisher)
        assert publisher.bus_name == "my-bus"
        wiring.reset()
        monkeypatch.setenv("DROPFLOW_EVENT_LOG", str(tmp_path / "events.jsonl"))
        assert type(wiring.events()).__name__ == "JsonLinesEventPublisher"
    finally:
        wiring.reset()
