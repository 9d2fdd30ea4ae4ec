"""What only the DynamoDB Registry must get right: a conditional write whose answer was lost.

botocore retries a request when the answer does not arrive (a timeout, a reset connection, a
5xx). A conditional PutItem may have landed on the first try; its retry then fails its own
condition. The adapter must still report that write as its own, or a claim the launcher
made reads as a duplicate (and nobody trains that data), and a compare-and-set that landed
is applied a second time on top of itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.exceptions import JsonRESTError
from moto.dynamodb.models import DynamoDBBackend

from dropflow.adapters.aws.dynamodb_registry import DynamoRegistry
from tests.moto_stack import create_registry_table

TABLE = "dropflow-lost-answers"


class AnswerLost(JsonRESTError):
    """A 5xx after the write was done: botocore's standard mode retries it."""

    code = 500

    def __init__(self) -> None:
        super().__init__("InternalServerError", "the write was done; its answer was lost")


@pytest.fixture
def dynamo() -> Iterator[DynamoRegistry]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_registry_table(client, TABLE)
        yield DynamoRegistry(TABLE, client=client)


def lose_the_next_put_answer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the first PutItem that DynamoDB carries out answers 500 instead of 200.
    Returns the log of PutItem outcomes, which shows that the retry really happened."""
    original = DynamoDBBackend.put_item
    outcomes: list[str] = []

    def put_item(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            item = original(self, *args, **kwargs)
        except Exception:
            outcomes.append("condition failed")
            raise
        if "answer lost" not in outcomes:
            outcomes.append("answer lost")
            raise AnswerLost()
        outcomes.append("ok")
        return item

    monkeypatch.setattr(DynamoDBBackend, "put_item", put_item)
    return outcomes


def test_a_claim_whose_answer_was_lost_is_still_ours(dynamo, monkeypatch):
    outcomes = lose_the_next_put_answer(monkeypatch)

    assert dynamo.put_if_absent("MODEL#iris", "CLAIM#v1", {"by": "me"}) is True
    assert outcomes == ["answer lost", "condition failed"]  # retried, against its own item
    # ...and nobody else can take it afterwards.
    assert dynamo.put_if_absent("MODEL#iris", "CLAIM#v1", {"by": "other"}) is False
    assert dynamo.get("MODEL#iris", "CLAIM#v1").data == {"by": "me"}


def test_a_compare_and_set_whose_answer_was_lost_is_applied_once(dynamo, monkeypatch):
    dynamo.put_if_absent("JOB#1", "STATE", {"attempts": 1})
    outcomes = lose_the_next_put_answer(monkeypatch)

    assert dynamo.compare_and_set("JOB#1", "STATE", {"attempts": 2}, expected_revision=1) is True
    assert outcomes == ["answer lost", "condition failed"]
    record = dynamo.get("JOB#1", "STATE")
    assert (record.data, record.revision) == ({"attempts": 2}, 2)


def test_someone_elses_item_still_fails_the_condition(dynamo):
    assert dynamo.put_if_absent("MODEL#iris", "CLAIM#v1", {"by": "first"}) is True
    assert dynamo.put_if_absent("MODEL#iris", "CLAIM#v1", {"by": "second"}) is False
    record = dynamo.get("MODEL#iris", "CLAIM#v1")
    assert (record.data, record.revision) == ({"by": "first"}, 1)
    assert dynamo.compare_and_set("MODEL#iris", "CLAIM#v1", {"x": 1}, expected_revision=7) is False
