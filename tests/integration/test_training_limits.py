"""The stack owner's limits on AWS (moto): the launch and track functions, with the events/
samples, against the stack's bucket, table and launch template.

- A spec naming an instance type outside TrainingInstanceTypes fails its job before any
  CreateFleet call; one that narrows the list gets exactly its types in the fleet request.
- Drops for more models than TrainingMaxConcurrentJobs, delivered at once to as many
  execution environments (threads of one process, as in test_concurrent_launch.py), start
  exactly the cap's jobs; the rest are queued, and as jobs publish and their instances end
  (state-change events, delivered at once too), the queued ones start in turn. Never more
  than the cap of instances run at once: counted where the Compute adapter launches and where
  the test ends them, and checked against EC2's own list after every round.

CreateFleet calls are counted on the very EC2 client the adapter sends with (a botocore hook).
moto's DynamoDB and S3 get the same per-call atomicity fixtures as test_concurrent_launch.py.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dropflow import wiring
from dropflow.observability import metrics
from dropflow.records.jobs import JobState, JobStore
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import load_handler
from tests.moto_stack import MANAGED_TAG, REGION, Stack, count_create_fleet, deploy_stack, holding

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
CSV = b"a,b,label\n1.0,2.0,x\n3.0,4.0,y\n5.0,6.0,x\n"
ALLOWED = "g6.xlarge,g5.xlarge"  # TrainingInstanceTypes, as the template joins it
CAP = 3
MODELS = [f"model-{n}" for n in range(8)]


def sample(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS / name).read_text()))


@pytest.fixture(autouse=True)
def _one_metric_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads of one process share powertools' Metrics, which is not thread-safe; separate
    Lambda environments never share one (see test_concurrent_launch.py)."""
    lock = threading.RLock()
    for name in ("add_metric", "flush_metrics"):
        monkeypatch.setattr(metrics, name, holding(lock, getattr(metrics, name)))


@pytest.fixture(params=["in-process", "http"])
def stack(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    atomic_moto_dynamodb: None,
    thread_safe_moto_s3: None,
) -> Iterator[Stack]:
    endpoint = request.getfixturevalue("moto_server") if request.param == "http" else None
    with contextlib.nullcontext() if endpoint else mock_aws():
        made = deploy_stack(monkeypatch, endpoint)
        monkeypatch.setenv("DROPFLOW_TRAINING_INSTANCE_TYPES", ALLOWED)
        monkeypatch.setenv("DROPFLOW_MAX_CONCURRENT_JOBS", str(CAP))
        wiring.reset()
        yield made
        wiring.reset()


@pytest.fixture
def launch(stack) -> ModuleType:
    return load_handler(ROOT / "functions" / "launch_training" / "app.py")


@pytest.fixture
def track(stack) -> ModuleType:
    return load_handler(ROOT / "functions" / "track_training" / "app.py")


def put_dataset(stack: Stack, model: str, spec: bytes | None = None) -> dict[str, Any]:
    """The model's data (and spec) in the bucket; the drop event EventBridge would deliver."""
    s3 = boto3.client("s3", region_name=REGION)
    if spec is not None:
        s3.put_object(Bucket=stack.bucket, Key=f"datasets/{model}/dropflow.yaml", Body=spec)
    key = f"datasets/{model}/data.csv"
    s3.put_object(Bucket=stack.bucket, Key=key, Body=CSV)
    event = sample("s3-dataset-created.json")
    event["detail"]["bucket"]["name"] = stack.bucket
    event["detail"]["object"]["key"] = key
    event["resources"] = [f"arn:aws:s3:::{stack.bucket}"]
    return event


def state_change(instance_id: str) -> dict[str, Any]:
    event = sample("ec2-state-change.json")
    event["detail"]["instance-id"] = instance_id
    event["resources"] = [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance_id}"]
    return event


def at_once(handler: Callable[..., dict[str, Any]], events: list[dict[str, Any]]) -> list[Any]:
    """`handler` called with each event, from as many threads released together."""
    start = threading.Barrier(len(events))

    def deliver(event: dict[str, Any]) -> dict[str, Any]:
        start.wait(timeout=60)
        return handler(event, LambdaContext())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the check-then-act windows finely
    try:
        with ThreadPoolExecutor(max_workers=len(events)) as pool:
            return list(pool.map(deliver, events, timeout=240))
    finally:
        sys.setswitchinterval(interval)


def flat(outcome: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A launch outcome (as the handler answers it), its follow-up's and those it started."""
    yield outcome
    if outcome.get("follow_up"):
        yield from flat(outcome["follow_up"])
    for started in outcome.get("started") or ():
        yield from flat(started)


def fleet_types(params: dict[str, Any]) -> list[str]:
    return [o["InstanceType"] for o in params["LaunchTemplateConfigs"][0]["Overrides"]]


# --------------------------------------------------------------------------- the allowlist
def test_a_spec_naming_a_type_outside_the_allowlist_fails_before_any_create_fleet(stack, launch):
    calls, _ = count_create_fleet(wiring.compute().client)
    event = put_dataset(stack, "big", b"compute: {instance_types: [p5.48xlarge, g6.xlarge]}\n")

    (outcome,) = launch.lambda_handler(event, LambdaContext())["results"]

    assert outcome["action"] == "failed"
    assert calls == []
    job = JobStore(wiring.registry()).get(outcome["job_id"])
    assert job.state == JobState.FAILED
    assert job.reason == (
        "datasets/big/dropflow.yaml: compute.instance_types: p5.48xlarge is not allowed by "
        "this stack; allowed: g6.xlarge, g5.xlarge (the stack owner's TrainingInstanceTypes "
        "(DROPFLOW_TRAINING_INSTANCE_TYPES)); name only allowed types, or leave the key out to "
        "use them all"
    )


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        (b"trainig: {epochs: 5}\n", "trainig"),
        (b"training: {epochs: many}\n", "training.epochs"),
    ],
    ids=["unknown-key", "bad-value"],
)
def test_a_spec_typo_fails_its_job_before_any_create_fleet(stack, launch, spec, named):
    # Issue 15: a typo found by the training job would cost a booted GPU instance.
    calls, _ = count_create_fleet(wiring.compute().client)
    event = put_dataset(stack, "typo", spec)

    (outcome,) = launch.lambda_handler(event, LambdaContext())["results"]

    assert outcome["action"] == "failed" and calls == []
    job = JobStore(wiring.registry()).get(outcome["job_id"])
    assert job.state == JobState.FAILED and job.attempts == []
    assert (job.reason or "").startswith(f"datasets/typo/dropflow.yaml: {named}")


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        (None, ["g6.xlarge", "g5.xlarge"]),
        (b"compute: {instance_types: [g5.xlarge]}\n", ["g5.xlarge"]),
    ],
    ids=["no-spec", "narrowed"],
)
def test_the_fleet_asks_only_for_the_types_the_limits_allow(stack, launch, spec, types):
    _, sent = count_create_fleet(wiring.compute().client)
    event = put_dataset(stack, "small", spec)

    (outcome,) = launch.lambda_handler(event, LambdaContext())["results"]

    assert outcome["action"] == "launched", outcome
    (params,) = sent
    assert sorted(set(fleet_types(params))) == sorted(types)


def test_a_budget_above_the_stacks_maximum_fails_before_any_create_fleet(stack, launch):
    calls, _ = count_create_fleet(wiring.compute().client)
    event = put_dataset(stack, "rich", b"compute: {budget_usd: 5000}\n")

    (outcome,) = launch.lambda_handler(event, LambdaContext())["results"]

    assert outcome["action"] == "failed" and calls == []
    assert (
        "compute.budget_usd: $5,000.00 is above this stack's maximum of $50.00"
        in (outcome["message"])
    )


# --------------------------------------------------------------------------- the cap
def test_concurrent_drops_never_run_more_jobs_than_the_cap_and_all_train_in_turn(
    stack, launch, track
):
    ec2 = wiring.compute().client
    calls, _ = count_create_fleet(ec2)
    events = [put_dataset(stack, model) for model in MODELS]
    compute = wiring.compute()
    alive: set[str] = set()
    most = [0]
    lock = threading.Lock()
    launch_instance = compute.launch

    def counting_launch(request: Any) -> Any:
        instance = launch_instance(request)
        with lock:
            alive.add(instance.instance_id)
            most[0] = max(most[0], len(alive))
        return instance

    compute.launch = counting_launch  # type: ignore[method-assign]
    wiring.launcher()  # an execution environment's first request makes these
    wiring.tracker()
    jobs = JobStore(wiring.registry())

    # When every drop arrives at once
    results = at_once(launch.lambda_handler, events)

    # Then the cap's jobs launch (each by the one call that gave it its slot: its own, or
    # another's that started it from the queue) and the others wait their turn
    outcomes = [o for r in results for o in r["results"]]
    assert {o["action"] for o in outcomes} <= {"launched", "queued"}, outcomes
    assert len({o["job_id"] for o in outcomes}) == len(MODELS)
    launched = [o["job_id"] for top in outcomes for o in flat(top) if o["action"] == "launched"]
    assert len(launched) == len(set(launched)) == CAP, outcomes
    assert len(calls) == CAP

    # And as the running jobs publish and their instances end, the queued ones start
    for _ in range(len(MODELS)):
        running = [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=[MANAGED_TAG])["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] in ("pending", "running")
        ]
        assert len(running) <= CAP, running
        if not running:
            break
        for instance_id in running:  # the training job publishes, then its instance ends
            job_id = compute.describe(instance_id).job_id
            for state in (JobState.RUNNING, JobState.EXPORTING, JobState.PUBLISHED):
                jobs.transition(job_id, state)
            with lock:
                alive.discard(instance_id)
            ec2.terminate_instances(InstanceIds=[instance_id])
        at_once(track.lambda_handler, [state_change(i) for i in running])

    assert most[0] == CAP
    assert len(calls) == len(MODELS)
    assert sorted(j.model for j in jobs.all() if j.state == JobState.PUBLISHED) == MODELS
    assert wiring.launcher().queue.state().running == {}
