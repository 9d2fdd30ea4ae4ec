"""What every deploy-time step shares: CloudFormation's custom-resource request and answer.

A step is a function `(Request) -> Answer`. `handler_for`
makes a Lambda handler of it that always answers CloudFormation (a step that raises fails the
deploy with its reason, instead of leaving the stack waiting), so a step is plain code its
tests call directly ("Custom resources", "Custom resource response objects",
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html).

These modules run only while CloudFormation deploys: plain Lambda functions of the template
(not SAM functions), with boto3 from the runtime and nothing else.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class StepRefused(Exception):
    """The deploy must stop: the message says what is wrong and how to put it right."""


@dataclass(frozen=True)
class Request:
    type: str  # Create, Update or Delete
    properties: Mapping[str, Any]
    # Update: the properties before it. Update and Delete: what this resource answered before.
    old_properties: Mapping[str, Any] = field(default_factory=dict)
    physical_id: str = ""


@dataclass(frozen=True)
class Answer:
    physical_id: str
    data: Mapping[str, Any] = field(default_factory=dict)
    # Shown in the stack's events beside the resource.
    reason: str = ""


Step = Callable[[Request], Answer]

# CloudFormation refuses a response body over 4,096 bytes ("The total size of the response
# body can't exceed 4096 bytes"): the whole body, as sent, not the reason's characters.
MAX_BODY = 4096
CUT = " ... (cut to fit CloudFormation's 4 KB answer; the whole reason is in the step's log)"


def body(event: Mapping[str, Any], status: str, answer: Answer) -> bytes:
    """The JSON CloudFormation reads at ResponseURL, the reason cut so that it fits."""
    fields = {
        "Status": status,
        "Reason": answer.reason,
        "PhysicalResourceId": answer.physical_id,
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": dict(answer.data),
    }
    encoded = json.dumps(fields, default=str).encode()
    if len(encoded) <= MAX_BODY:
        return encoded
    # Count each character as JSON writes it (a non-ASCII one is a 6-byte escape).
    room = MAX_BODY - len(json.dumps({**fields, "Reason": CUT}, default=str).encode())
    kept = []
    for char in answer.reason:
        room -= len(json.dumps(char)) - 2
        if room < 0:
            break
        kept.append(char)
    return json.dumps({**fields, "Reason": "".join(kept) + CUT}, default=str).encode()


def respond(event: Mapping[str, Any], status: str, answer: Answer) -> None:
    request = urllib.request.Request(
        event["ResponseURL"],
        data=body(event, status, answer),
        method="PUT",
        # The presigned URL was signed without a content type: sending one breaks it.
        headers={"Content-Type": ""},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def handler_for(step: Step) -> Callable[[Mapping[str, Any], Any], None]:
    def handler(event: Mapping[str, Any], context: Any) -> None:
        request = event["RequestType"]
        # A failed Create has no physical id yet; CloudFormation still needs one.
        fallback = event.get("PhysicalResourceId") or event["LogicalResourceId"]
        try:
            answer = step(
                Request(
                    request,
                    event["ResourceProperties"],
                    event.get("OldResourceProperties") or {},
                    event.get("PhysicalResourceId", ""),
                )
            )
            status = "SUCCESS"
        except StepRefused as exc:
            answer, status = Answer(fallback, reason=str(exc)), "FAILED"
        except Exception as exc:  # any other failure also fails the deploy, with its reason
            answer, status = Answer(fallback, reason=f"{type(exc).__name__}: {exc}"), "FAILED"
        print(
            json.dumps(
                {
                    "request": request,
                    "status": status,
                    "reason": answer.reason,
                    "data": dict(answer.data),
                },
                default=str,
            )
        )
        respond(event, status, answer)

    return handler
