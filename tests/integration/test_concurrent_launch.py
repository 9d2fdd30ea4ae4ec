"""100 concurrent duplicate events for one upload lead to exactly one CreateFleet call.

EventBridge delivers at least once, and a burst of retries can reach many Lambda execution
environments at the same moment. functions/launch_training/app.py is called here 100 times at
once, from 100 threads released together, with the same S3 "Object Created" event
(events/s3-dataset-created.json pointed at the test bucket): on S3 + DynamoDB + EC2 under
moto (in-process, and over HTTP to moto_server), and on the embedded default's directory +
SQLite with an in-memory Compute. The threads share one execution environment (one set of
cached clients), which is the harder case for the adapters' thread safety.

CreateFleet calls are counted where they happen: a botocore `before-call.ec2.CreateFleet`
hook on the very EC2 client the Compute adapter sends with, and then the instances EC2
reports. The registry's own account of jobs is only checked afterwards, never trusted alone.

moto's DynamoDB conditional writes are not atomic under threads, in-process or behind
moto_server: without the `atomic_moto_dynamodb` fixture (tests/conftest.py) two of the 100
deliveries sometimes both win the claim. The AWS runs use that fixture, so that each write
call is as atomic as on DynamoDB, and nothing more. In-process, moto also reloads a module of
its own on every S3 request, which is not safe from many threads at once (an ImportError in
one of the 100): `thread_safe_moto_s3` serializes that reload, and nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dropflow import wiring
from dropflow.observability import metrics
from dropflow.records.jobs import JobStore
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_compute import FakeCompute
from tests.fakes_serving import load_handler
from tests.moto_stack import (
    MANAGED_TAG,
    REGION,
    Stack,
    count_create_fleet,
    deploy_stack,
    holding,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
EVENT = json.loads((ROOT / "events" / "s3-dataset-created.json").read_text())
MODEL = "breast-cancer"
DATA_KEY = f"datasets/{MODEL}/data.csv"  # the key of the sample event
DELIVERIES = 100
CSV = b"a,b,label\n1.0,2.0,x\n3.0,4.0,y\n5.0,6.0,x\n"


def dataset_event(bucket: str) -> dict[str, Any]:
    event = copy.deepcopy(EVENT)
    event["detail"]["bucket"]["name"] = bucket
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    assert event["detail"]["object"]["key"] == DATA_KEY
    return event


@pytest.fixture(autouse=True)
def _one_metric_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 100 deliveries are threads of one process, so they share powertools' Metrics,
    which is not thread-safe (it flushes a full metric set while other threads add to it);
    separate Lambda environments never share one. A lock around adding and flushing metrics
    keeps the race where it belongs: in dropflow's claims, not in the metrics buffer."""
    lock = threading.RLock()
    for name in ("add_metric", "flush_metrics"):
        monkeypatch.setattr(metrics, name, holding(lock, getattr(metrics, name)))


def deliver_concurrently(
    handler: Callable[[dict[str, Any], Any], dict[str, Any]], event: dict[str, Any], n: int
) -> list[dict[str, Any]]:
    """Call `handler` with copies of `event` from `n` threads released at the same moment."""
    start = threading.Barrier(n)

    def deliver(_: int) -> dict[str, Any]:
        start.wait(timeout=60)
        return handler(copy.deepcopy(event), LambdaContext(function_name="LaunchTraining"))

    # Switch threads every 10 us instead of every 5 ms, so that the check-then-act windows of
    # the code under test are interleaved as they are between separate Lambda environments.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(deliver, range(n), timeout=240))
    finally:
        sys.setswitchinterval(interval)


def warm_environment() -> None:
    """Make what an execution environment's first request makes, before the threads are
    released: the launcher and the boto3 client of each adapter it uses (boto3 makes them all
    from one default session, which is not safe from many threads at once). moto's backends
    for S3, DynamoDB and EC2 are loaded already: creating the stack called each of them."""
    wiring.launcher()
    for adapter in (wiring.store(), wiring.registry(), wiring.compute()):
        assert adapter.client is not None  # each adapter's client, created on first use


def actions(results: list[dict[str, Any]]) -> Counter[str]:
    return Counter(outcome["action"] for r in results for outcome in r["results"])


def launched_job(results: list[dict[str, Any]]) -> str:
    [job_id] = [o["job_id"] for r in results for o in r["results"] if o["action"] == "launched"]
    return job_id


# --------------------------------------------------------------------------- on AWS (moto)
@pytest.fixture(params=["in-process", "http"])
def stack(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    atomic_moto_dynamodb: None,
    thread_safe_moto_s3: None,
) -> Iterator[Stack]:
    """The stack's bucket, table and launch template under moto, and the functions'
    environment pointing at them. `in-process`: moto answers inside botocore (mock_aws);
    `http`: every call goes over HTTP to moto_server, as to AWS."""
    endpoint = request.getfixturevalue("moto_server") if request.param == "http" else None
    with contextlib.nullcontext() if endpoint else mock_aws():
        made = deploy_stack(monkeypatch, endpoint)
        wiring.reset()
        yield made
        wiring.reset()


def test_100_concurrent_duplicate_drops_make_exactly_one_create_fleet_call(stack):
    # Given a dataset in the bucket and the launch function's execution environment
    boto3.client("s3", region_name=REGION).put_object(Bucket=stack.bucket, Key=DATA_KEY, Body=CSV)
    app = load_handler(ROOT / "functions" / "launch_training" / "app.py")
    ec2 = wiring.compute().client  # the client the Compute adapter launches with
    create_fleet_calls, create_fleet_params = count_create_fleet(ec2)
    warm_environment()

    # When the same drop event arrives 100 times at once
    results = deliver_concurrently(app.lambda_handler, dataset_event(stack.bucket), DELIVERIES)

    # Then EC2 was asked for an instance exactly once...
    assert len(create_fleet_calls) == 1, f"{len(create_fleet_calls)} CreateFleet calls"
    # ...by the one delivery that launched; every other one was told it is a duplicate...
    assert actions(results) == {"launched": 1, "duplicate": DELIVERIES - 1}, actions(results)
    job_id = launched_job(results)
    [tags] = [
        {t["Key"]: t["Value"] for t in spec["Tags"]}
        for spec in create_fleet_params[0]["TagSpecifications"]
        if spec["ResourceType"] == "instance"
    ]
    assert tags["DROPFLOW_JOB_ID"] == job_id
    # ...exactly one instance exists, tagged with it...
    reservations = ec2.describe_instances(Filters=[MANAGED_TAG])["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert [{t["Key"]: t["Value"] for t in i["Tags"]}["DROPFLOW_JOB_ID"] for i in instances] == [
        job_id
    ]
    # ...and the registry knows one job, whose attempt runs on that instance.
    [job] = JobStore(wiring.registry()).for_model(MODEL)
    assert job.job_id == job_id
    assert [a.instance_id for a in job.attempts] == [instances[0]["InstanceId"]]


def test_a_drop_while_another_takes_the_slot_waits_as_its_follow_up(stack, monkeypatch):
    # Given a first drop that has just taken the model's active slot, and not yet recorded
    # its job (the window is a few DynamoDB round trips)...
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=stack.bucket, Key=DATA_KEY, Body=CSV)
    app = load_handler(ROOT / "functions" / "launch_training" / "app.py")
    create_fleet_calls, _ = count_create_fleet(wiring.compute().client)
    registry = wiring.registry()
    take_slot = registry.put_if_absent
    second: list[dict[str, Any]] = []

    def put_if_absent(pk: str, sk: str, data: dict[str, Any], **kwargs: Any) -> bool:
        taken = take_slot(pk, sk, data, **kwargs)
        if sk == "ACTIVE" and taken and not second:
            # ...a second file arrives, and its event reaches another execution environment.
            more = f"datasets/{MODEL}/more.csv"
            s3.put_object(Bucket=stack.bucket, Key=more, Body=CSV)
            event = dataset_event(stack.bucket)
            event["detail"]["object"]["key"] = more
            second.append(app.lambda_handler(event, LambdaContext()))
        return taken

    monkeypatch.setattr(registry, "put_if_absent", put_if_absent)

    first = app.lambda_handler(dataset_event(stack.bucket), LambdaContext())

    # Then one instance trains, and the new data waits for one follow-up run.
    assert len(create_fleet_calls) == 1, f"{len(create_fleet_calls)} CreateFleet calls"
    assert actions([first, *second]) == {"launched": 1, "coalesced": 1}


# --------------------------------------------------------------------------- embedded default
@pytest.fixture
def local_compute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCompute]:
    """Directory store and SQLite registry behind DROPFLOW_*; an in-memory Compute that
    records every launch, in place of child processes (which would train for real)."""
    monkeypatch.setenv("DROPFLOW_STORE_URL", (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("DROPFLOW_REGISTRY_URL", f"sqlite://{tmp_path / 'registry.db'}")
    monkeypatch.delenv("DROPFLOW_COMPUTE_URL", raising=False)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    fake = FakeCompute()
    monkeypatch.setattr(wiring, "compute", cache(lambda: fake))
    wiring.reset()
    yield fake
    wiring.reset()


def test_100_concurrent_duplicate_drops_launch_once_on_the_local_adapters(local_compute):
    wiring.store().put(DATA_KEY, CSV)
    app = load_handler(ROOT / "functions" / "launch_training" / "app.py")
    wiring.launcher()  # made once, as by an execution environment's first request

    results = deliver_concurrently(app.lambda_handler, dataset_event("local"), DELIVERIES)

    assert local_compute.tried == ["spot"], f"{len(local_compute.tried)} launches"
    assert actions(results) == {"launched": 1, "duplicate": DELIVERIES - 1}, actions(results)
    assert [r.job_id for r in local_compute.launches] == [launched_job(results)]
