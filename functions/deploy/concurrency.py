"""Reserve concurrency for the control functions when the account's limit allows it.

Custom::ControlPlaneConcurrency, properties FunctionNames and PerFunction. Lambda keeps at
least 100 of the account's limit unreserved ("Configuring reserved concurrency",
https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html), and a new
account's limit can be as low as 10, where a reservation on the functions themselves would
fail the whole deploy; so this step reserves where the account allows it and otherwise says,
in the Status attribute, what limit it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
from botocore.exceptions import ClientError
from custom_resource import Answer, Request, handler_for

UNRESERVED_MINIMUM = 100
# One physical id for the life of the stack: a new one would make CloudFormation delete the
# "old" resource after an update, releasing what the update reserved.
PHYSICAL_ID = "control-plane-concurrency"


def plan(count: int, each: int, settings: Mapping[str, Any], held: int) -> tuple[bool, str]:
    """(reserve?, status) for `count` functions of `each`, from GetAccountSettings and what
    those functions hold already (it returns to the pool when re-reserved)."""
    limit = settings["AccountLimit"]["ConcurrentExecutions"]
    unreserved = settings["AccountLimit"]["UnreservedConcurrentExecutions"] + held
    wanted = count * each
    if unreserved - wanted >= UNRESERVED_MINIMUM:
        return True, f"reserved {each} for each of {count} functions (limit {limit})"
    needed = limit - unreserved + wanted + UNRESERVED_MINIMUM
    return False, (
        f"not reserved: the account's Lambda concurrency limit is {limit}, Lambda keeps "
        f"{UNRESERVED_MINIMUM} unreserved, and reserving {wanted} needs a limit of "
        f"{needed}; raise it (Service Quotas, Lambda, Concurrent executions, L-B99A9384) "
        "and redeploy"
    )


def release(client: Any, name: str) -> None:
    try:
        client.delete_function_concurrency(FunctionName=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise


def apply(client: Any, request: str, names: list[str], each: int) -> str:
    """What this request leaves reserved, as a status line."""
    if request == "Delete":
        for name in names:
            release(client, name)
        return "released"
    held = {
        name: client.get_function_concurrency(FunctionName=name).get(
            "ReservedConcurrentExecutions", 0
        )
        for name in names
    }
    reserve, status = plan(len(names), each, client.get_account_settings(), sum(held.values()))
    try:
        for name in names:
            if reserve:
                client.put_function_concurrency(
                    FunctionName=name, ReservedConcurrentExecutions=each
                )
            elif held[name]:
                release(client, name)
    except ClientError as exc:
        # Lambda's own rule wins over the copy above: never half reserved.
        if exc.response["Error"]["Code"] != "InvalidParameterValueException":
            raise
        for name in names:
            release(client, name)
        status = "not reserved: " + exc.response["Error"]["Message"]
    return status


def step(request: Request) -> Answer:
    status = apply(
        boto3.client("lambda"),
        request.type,
        list(request.properties["FunctionNames"]),
        int(request.properties["PerFunction"]),
    )
    return Answer(PHYSICAL_ID, {"Status": status}, reason=status)


handler = handler_for(step)
