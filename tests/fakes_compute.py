"""An in-memory Compute for domain tests: launches nothing, remembers everything."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from dropflow.ports import Instance, InstanceState, LaunchError, LaunchRequest


class FakeCompute:
    """`prices` is what a launch of each lifecycle reports per hour (None: unknown), and
    `on_demand_price` the on-demand equivalent; `clock` stamps launches and ends."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.prices: dict[str, float | None] = {"spot": 0.3, "on-demand": 1.0}
        self.on_demand_price: float | None = 1.0
        self.instances: dict[str, Instance] = {}
        self.launches: list[LaunchRequest] = []
        self.fail_with: str | None = None  # make the next launches raise LaunchError
        # Per purchase option: a (kind, message) every launch of that lifecycle fails with.
        self.refuse: dict[str, tuple[str, str]] = {}
        self.tried: list[str] = []  # lifecycle of every launch asked for, failed or not
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def launch(self, request: LaunchRequest) -> Instance:
        with self._lock:
            self.tried.append(request.lifecycle)
            if self.fail_with:
                raise LaunchError(self.fail_with)
            if request.lifecycle in self.refuse:
                kind, message = self.refuse[request.lifecycle]
                raise LaunchError(message, kind=kind)
            self.launches.append(request)
            instance = Instance(
                instance_id=f"fake-{next(self._ids)}",
                job_id=request.job_id,
                attempt=request.attempt,
                state=InstanceState.RUNNING,
                instance_type="fake.large",
                lifecycle=request.lifecycle,
                zone="fake-1a",
                launched_at=self.clock(),
                price_per_hour=self.prices.get(request.lifecycle),
                on_demand_price_per_hour=self.on_demand_price,
            )
            self.instances[instance.instance_id] = instance
            return instance

    def describe(self, instance_id: str) -> Instance | None:
        return self.instances.get(instance_id)

    def terminate(self, instance_id: str) -> None:
        self.end(instance_id, None)

    def list_instances(self) -> list[Instance]:
        return list(self.instances.values())

    def end(self, instance_id: str, exit_code: int | None) -> Instance:
        """Play the instance ending (spot reclaim, crash, or the job finishing)."""
        ended = replace(
            self.instances[instance_id],
            state=InstanceState.TERMINATED,
            exit_code=exit_code,
            ended_at=self.clock(),
        )
        self.instances[instance_id] = ended
        return ended
