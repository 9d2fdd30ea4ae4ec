"""The launcher starts one job per (model, data version) and one job at a time per model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from dropflow.datasets import data_version, model_of_dataset_key, models_with_data
from dropflow.errors import InvalidName
from dropflow.jobs import JobState, JobStore
from dropflow.launcher import Launcher
from dropflow.ports import ObjectInfo
from tests.fakes_compute import FakeCompute

CSV = b"a,b,target\n1,2,0\n3,4,1\n"


@pytest.fixture
def compute() -> FakeCompute:
    return FakeCompute()


@pytest.fixture
def launcher(store, registry, compute) -> Launcher:
    return Launcher(store, registry, compute, max_attempts=3)


def test_a_drop_launches_one_job_with_its_first_attempt(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)

    outcome = launcher.request_training("iris")

    assert outcome.action == "launched"
    job = JobStore(launcher.registry).get(outcome.job_id)
    assert job.state == JobState.LAUNCHING
    assert [a.number for a in job.attempts] == [1]
    assert job.attempts[0].instance_id == "fake-1"
    assert compute.launches[0].job_id == job.job_id


def test_the_same_data_delivered_twice_is_claimed_once(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)

    first = launcher.request_training("iris")
    second = launcher.request_training("iris")

    assert (first.action, second.action) == ("launched", "duplicate")
    assert len(compute.launches) == 1


def test_100_concurrent_duplicate_events_launch_exactly_once(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda _: launcher.request_training("iris"), range(100)))

    assert len(compute.launches) == 1
    assert sum(o.action == "launched" for o in outcomes) == 1


def test_new_data_while_a_job_runs_is_coalesced_into_one_follow_up(store, launcher, compute):
    store.put("datasets/iris/a.csv", CSV)
    running = launcher.request_training("iris")
    store.put("datasets/iris/b.csv", CSV)
    store.put("datasets/iris/c.csv", CSV)

    second = launcher.request_training("iris")
    third = launcher.request_training("iris")

    assert second.action == third.action == "coalesced"
    assert second.job_id == running.job_id
    assert len(compute.launches) == 1
    assert launcher.release_slot("iris", running.job_id) is True  # a follow-up is owed
    assert launcher.request_training("iris", trigger="follow-up").action == "launched"


def test_a_prefix_without_data_files_starts_nothing(store, launcher, compute):
    store.put("datasets/iris/dropflow.yaml", b"target: y\n")

    outcome = launcher.request_training("iris")

    assert outcome.action == "no-data"
    assert "datasets/iris/" in outcome.message
    assert compute.launches == []


def test_an_invalid_model_name_is_rejected_with_the_rule():
    with pytest.raises(InvalidName, match="Iris_Data"):
        Launcher(None, None, None).request_training("Iris_Data")  # type: ignore[arg-type]


def test_a_launch_error_fails_the_job_with_the_reason_and_frees_the_model(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.fail_with = "InsufficientInstanceCapacity in every pool"

    outcome = launcher.request_training("iris")

    assert outcome.action == "failed"
    job = JobStore(launcher.registry).get(outcome.job_id)
    assert job.state == JobState.FAILED
    assert "InsufficientInstanceCapacity" in (job.reason or "")
    assert launcher.active_job("iris") is None


def test_data_version_changes_with_any_key_or_etag_and_not_with_order():
    a = ObjectInfo("datasets/m/a.csv", 1, "e1", 0.0)
    b = ObjectInfo("datasets/m/b.csv", 1, "e2", 0.0)

    assert data_version([a, b]) == data_version([b, a])
    assert data_version([a, b]) != data_version([a])
    assert data_version([a]) != data_version([ObjectInfo(a.key, 1, "other", 0.0)])


def test_dataset_keys_name_their_model():
    assert model_of_dataset_key("datasets/iris/2026/part-1.csv") == "iris"
    assert model_of_dataset_key("datasets/iris.csv") is None
    assert model_of_dataset_key("models/iris/v1/card.json") is None


def test_models_with_data_skips_invalid_names(store):
    store.put("datasets/iris/a.csv", CSV)
    store.put("datasets/Bad Name/a.csv", CSV)

    assert models_with_data(store) == ["iris"]


SPOT_FULL = ("capacity", "InsufficientInstanceCapacity in g5.xlarge/subnet-a, g6.xlarge/subnet-a")


def test_no_spot_capacity_anywhere_leads_to_an_on_demand_attempt(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.refuse["spot"] = SPOT_FULL

    outcome = launcher.request_training("iris")

    assert outcome.action == "launched"
    assert compute.tried == ["spot", "on-demand"]
    attempt = JobStore(launcher.registry).get(outcome.job_id).attempts[0]
    assert attempt.lifecycle == "on-demand"


def test_a_spot_quota_also_falls_back_to_on_demand(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.refuse["spot"] = ("quota", "MaxSpotInstanceCountExceeded")

    assert launcher.request_training("iris").action == "launched"
    assert compute.tried == ["spot", "on-demand"]


def test_with_on_demand_forbidden_the_job_fails_saying_why(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    store.put("datasets/iris/dropflow.yaml", b"compute:\n  on_demand: never\n")
    compute.refuse["spot"] = SPOT_FULL

    outcome = launcher.request_training("iris")

    assert outcome.action == "failed"
    assert compute.tried == ["spot"]
    reason = JobStore(launcher.registry).get(outcome.job_id).reason or ""
    assert "InsufficientInstanceCapacity" in reason
    assert "compute.on_demand: never" in reason


def test_a_request_error_does_not_fall_back(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.refuse["spot"] = ("config", "InvalidLaunchTemplateId.NotFound")

    assert launcher.request_training("iris").action == "failed"
    assert compute.tried == ["spot"]


def test_the_spec_can_ask_for_on_demand_only_and_name_instance_types(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    store.put(
        "datasets/iris/dropflow.yaml",
        b"compute:\n  on_demand: always\n  instance_types: [g6.xlarge]\n",
    )

    launcher.request_training("iris")

    assert compute.tried == ["on-demand"]
    assert tuple(compute.launches[0].instance_types) == ("g6.xlarge",)


def test_an_invalid_spec_does_not_stop_the_launch_the_job_reports_it(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    store.put("datasets/iris/dropflow.yaml", b"compute: {on_demand: sometimes}\n")

    assert launcher.request_training("iris").action == "launched"
