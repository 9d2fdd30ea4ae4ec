"""Helpers shared by the Compute contract (test_compute.py) and the ProcessCompute tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dropflow.ports import Compute, Instance, InstanceState, LaunchRequest
from tests.net import wait_until

JOB_ID = "iris-20261123T101500Z-3f9a0c"


def launch_request(attempt: int = 1, **environment: str) -> LaunchRequest:
    """A spot request for one g5.xlarge; `environment` drives the stand-in entrypoint."""
    return LaunchRequest(
        job_id=JOB_ID,
        model="iris",
        attempt=attempt,
        instance_types=("g5.xlarge",),
        lifecycle="spot",
        environment=environment,
    )


def wait_for(condition: Callable[[], Any], timeout: float = 120.0, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds
    (child processes start and end slowly on a loaded machine: the bound is generous)."""
    return wait_until(condition, timeout, 0.02, what=what)


def ended(compute: Compute, instance_id: str) -> Instance:
    """The instance once it has ended (fails the test if it does not end in time)."""

    def check() -> Instance | None:
        inst = compute.describe(instance_id)
        return inst if inst is not None and inst.state == InstanceState.TERMINATED else None

    return wait_for(check, what=f"{instance_id} to end")


def ready(out: Path) -> dict[str, Any]:
    """What the entrypoint reported once its signal handlers were in place."""
    wait_for(out.exists, what="the entrypoint to start")
    return json.loads(out.read_text())
