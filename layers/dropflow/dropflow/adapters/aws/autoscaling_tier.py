"""The container tier on AWS: the stack's serving Auto Scaling group (minimum 0).

Promotion (or a rollback) that makes a `container` version a champion raises the group's
desired capacity to at least one; the group then keeps that many healthy instances behind the
internal load balancer. Once no model's champion is routed to the container, the next
promotion or rollback sets it back to zero: an idle server only costs money.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from dropflow.errors import DropflowError


class ScalingFailed(DropflowError):
    """The group's desired capacity could not be read or set (the message says why)."""


class AutoScalingTier:
    def __init__(self, group: str, client: Any = None) -> None:
        self.group = group
        self.client = client or boto3.client("autoscaling")

    def scale_out(self, minimum: int = 1) -> str:
        """Raise the group's desired capacity to `minimum` (capped at its maximum)."""
        with self._failing("scale out"):
            desired, maximum = self._capacity()
            wanted = min(minimum, maximum)
            if desired >= wanted:
                return f"{self.group} already has {desired} instance(s) wanted"
            self._set(wanted)
        return f"{self.group}: desired capacity {desired} -> {wanted}"

    def scale_in(self) -> str:
        """Set the group's desired capacity to 0 (its minimum); nothing if it is 0 already."""
        with self._failing("scale in"):
            desired, _ = self._capacity()
            if desired == 0:
                return f"{self.group} already has no instance wanted"
            self._set(0)
        return f"{self.group}: desired capacity {desired} -> 0 (no champion is routed here)"

    def _capacity(self) -> tuple[int, int]:
        """The group's (desired capacity, maximum size)."""
        groups = self.client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])[
            "AutoScalingGroups"
        ]
        if not groups:
            raise ScalingFailed(f"Auto Scaling group {self.group!r} does not exist")
        return groups[0]["DesiredCapacity"], groups[0]["MaxSize"]

    def _set(self, desired: int) -> None:
        # HonorCooldown off: a promotion waits on this, not on a previous scaling's pause.
        self.client.set_desired_capacity(
            AutoScalingGroupName=self.group, DesiredCapacity=desired, HonorCooldown=False
        )

    @contextlib.contextmanager
    def _failing(self, verb: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise ScalingFailed(f"cannot {verb} {self.group}: {exc}") from exc
