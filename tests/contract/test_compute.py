"""The Compute contract: what every adapter does (ProcessCompute, and Ec2Compute under moto).

What only a child process has (exit codes, signals, its environment) is tested in
test_compute_process.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dropflow import wiring
from dropflow.adapters.local.process_compute import ProcessCompute
from dropflow.ports import Compute, InstanceState
from tests.contract.compute_helpers import JOB_ID, ended, launch_request, wait_for

if TYPE_CHECKING:
    from conftest import ComputeBackend

# Keeps a process instance running until terminated; EC2 ignores the request environment.
RUNNING = {"TEST_MODE": "sleep"}


def _running(compute: Compute, instance_id: str) -> None:
    def check() -> bool:
        inst = compute.describe(instance_id)
        return inst is not None and inst.state == InstanceState.RUNNING

    wait_for(check, what=f"{instance_id} to run")


def test_launched_instance_runs_with_the_job_identity(compute_backend: ComputeBackend) -> None:
    compute = compute_backend.adapter

    launched = compute.launch(launch_request(attempt=2, **RUNNING))

    assert launched.state in (InstanceState.PENDING, InstanceState.RUNNING)
    assert (launched.job_id, launched.attempt, launched.lifecycle) == (JOB_ID, 2, "spot")
    assert launched.instance_type and launched.zone and launched.launched_at > 0
    _running(compute, launched.instance_id)
    seen = compute.describe(launched.instance_id)
    assert seen is not None
    assert (seen.job_id, seen.attempt, seen.lifecycle) == (JOB_ID, 2, "spot")
    assert (seen.instance_type, seen.zone) == (launched.instance_type, launched.zone)
    assert seen.ended_at is None and seen.exit_code is None


def test_a_launched_instance_says_what_it_costs(compute_backend: ComputeBackend) -> None:
    # Locally 0.0 (no simulated prices set); under moto, its spot price and g5.xlarge's
    # on-demand list price. Never a made-up 0 for a price the adapter could not learn.
    launched = compute_backend.adapter.launch(launch_request(**RUNNING))

    assert launched.price_per_hour is not None and launched.price_per_hour >= 0
    assert launched.on_demand_price_per_hour is not None
    assert launched.price_per_hour <= launched.on_demand_price_per_hour


def test_list_instances_includes_every_launch(compute_backend: ComputeBackend) -> None:
    compute = compute_backend.adapter
    first = compute.launch(launch_request(attempt=1, TEST_MODE="exit"))
    second = compute.launch(launch_request(attempt=2, **RUNNING))

    listed = {inst.instance_id: inst for inst in compute.list_instances()}

    assert {first.instance_id, second.instance_id} <= set(listed)
    assert listed[second.instance_id].attempt == 2
    assert listed[first.instance_id].job_id == JOB_ID
    assert first.instance_id != second.instance_id


def test_terminate_ends_a_running_instance(compute_backend: ComputeBackend) -> None:
    compute = compute_backend.adapter
    inst = compute.launch(launch_request(**RUNNING))
    _running(compute, inst.instance_id)

    compute.terminate(inst.instance_id)

    gone = ended(compute, inst.instance_id)
    assert (gone.job_id, gone.attempt) == (JOB_ID, 1)
    listed = {i.instance_id: i for i in compute.list_instances()}
    assert listed[inst.instance_id].state == InstanceState.TERMINATED


def test_terminate_is_idempotent(compute_backend: ComputeBackend) -> None:
    compute = compute_backend.adapter
    inst = compute.launch(launch_request(**RUNNING))

    compute.terminate(inst.instance_id)
    first = ended(compute, inst.instance_id)
    compute.terminate(inst.instance_id)

    assert compute.describe(inst.instance_id) == first


def test_terminate_or_describe_an_unknown_instance_is_fine(
    compute_backend: ComputeBackend,
) -> None:
    compute = compute_backend.adapter

    compute.terminate("proc-000000000000")
    compute.terminate("i-0123456789abcdef0")
    compute.terminate("../../etc/passwd")

    assert compute.describe("proc-000000000000") is None
    assert compute.describe("i-0123456789abcdef0") is None
    assert compute.describe("../../etc/passwd") is None


def test_a_second_adapter_sees_the_instance(compute_backend: ComputeBackend) -> None:
    first = compute_backend.adapter
    inst = first.launch(launch_request(**RUNNING))
    _running(first, inst.instance_id)
    second = compute_backend.new_adapter()

    seen = second.describe(inst.instance_id)

    assert seen is not None and seen.state == InstanceState.RUNNING
    assert (seen.job_id, seen.attempt) == (JOB_ID, 1)
    assert inst.instance_id in {i.instance_id for i in second.list_instances()}


def test_a_second_adapter_can_terminate_the_instance(compute_backend: ComputeBackend) -> None:
    inst = compute_backend.adapter.launch(launch_request(**RUNNING))
    second = compute_backend.new_adapter()

    second.terminate(inst.instance_id)

    assert ended(compute_backend.adapter, inst.instance_id).state == InstanceState.TERMINATED


def test_local_instances_can_simulate_prices_for_the_ledger(
    tmp_path: Path, entrypoint: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # ProcessCompute only: EC2 learns real prices (tests/unit/test_ec2_compute.py).
    monkeypatch.setenv("DROPFLOW_LOCAL_SPOT_PRICE", "0.3")
    monkeypatch.setenv("DROPFLOW_LOCAL_ON_DEMAND_PRICE", "1.0")
    compute = wiring.open_compute(f"process://{tmp_path / 'compute'}")
    compute.entrypoint = entrypoint

    spot = compute.launch(launch_request(attempt=1, TEST_MODE="exit"))
    on_demand = compute.launch(
        dataclasses.replace(launch_request(attempt=2, TEST_MODE="exit"), lifecycle="on-demand")
    )

    assert (spot.price_per_hour, spot.on_demand_price_per_hour) == (0.3, 1.0)
    assert (on_demand.price_per_hour, on_demand.on_demand_price_per_hour) == (1.0, 1.0)
    seen = ended(ProcessCompute(tmp_path / "compute", entrypoint), spot.instance_id)
    assert seen.price_per_hour == 0.3  # kept in the record for later adapters
