"""track_training on AWS (moto): an instance that ends mid-training is relaunched as the same
job's next attempt, a job out of attempts fails with the reason, and the watchdog terminates a
dropflow instance that serves no job. The functions run with the events/ samples, pointed at
the instances moto launched."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dropflow import wiring
from dropflow.records.jobs import JobState, JobStore
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import load_handler
from tests.moto_stack import REGION, STACK, Stack, count_create_fleet, deploy_stack

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
MODEL = "breast-cancer"
CSV = b"a,b,label\n1.0,2.0,x\n3.0,4.0,y\n5.0,6.0,x\n"


def sample(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS / name).read_text()))


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with mock_aws():
        made = deploy_stack(monkeypatch)
        wiring.reset()
        yield made
        wiring.reset()


@pytest.fixture
def launch(stack) -> ModuleType:
    return load_handler(ROOT / "functions" / "launch_training" / "app.py")


@pytest.fixture
def track(stack) -> ModuleType:
    return load_handler(ROOT / "functions" / "track_training" / "app.py")


def drop(stack: Stack, launch: ModuleType, spec: str | None = None) -> str:
    """Put a dataset (and spec) in the bucket and deliver its drop event; the job id."""
    s3 = boto3.client("s3", region_name=REGION)
    if spec is not None:
        s3.put_object(Bucket=stack.bucket, Key=f"datasets/{MODEL}/dropflow.yaml", Body=spec)
    s3.put_object(Bucket=stack.bucket, Key=f"datasets/{MODEL}/data.csv", Body=CSV)
    event = sample("s3-dataset-created.json")
    event["detail"]["bucket"]["name"] = stack.bucket
    (outcome,) = launch.lambda_handler(event, LambdaContext())["results"]
    assert outcome["action"] == "launched", outcome
    return outcome["job_id"]


def current_instance(job_id: str) -> str:
    instance_id = JobStore(wiring.registry()).get(job_id).attempts[-1].instance_id
    assert instance_id
    return instance_id


def instance_ends(track: ModuleType, instance_id: str) -> dict[str, Any]:
    """EC2 terminates the instance and EventBridge delivers the state change."""
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[instance_id])
    event = sample("ec2-state-change.json")
    event["detail"]["instance-id"] = instance_id
    event["resources"] = [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance_id}"]
    return track.lambda_handler(event, LambdaContext())


def test_an_instance_terminated_mid_training_relaunches_the_same_job_to_resume(
    stack, launch, track
):
    job_id = drop(stack, launch)
    JobStore(wiring.registry()).transition(job_id, JobState.RUNNING)
    first = current_instance(job_id)
    calls, params = count_create_fleet(wiring.compute().client)

    outcome = instance_ends(track, first)

    assert outcome["action"] == "relaunched"
    assert len(calls) == 1
    (tags,) = [
        {t["Key"]: t["Value"] for t in spec["Tags"]}
        for spec in params[0]["TagSpecifications"]
        if spec["ResourceType"] == "instance"
    ]
    # The same job id is what makes the new instance resume from jobs/<model>/<job-id>/.
    assert (tags["DROPFLOW_JOB_ID"], tags["DROPFLOW_ATTEMPT"]) == (job_id, "2")
    job = JobStore(wiring.registry()).get(job_id)
    assert [a.number for a in job.attempts] == [1, 2]
    assert job.attempts[0].ended_at is not None
    assert current_instance(job_id) != first


def test_a_job_out_of_attempts_fails_with_the_reason(stack, launch, track):
    job_id = drop(stack, launch, spec="compute: {max_attempts: 2}\n")

    assert instance_ends(track, current_instance(job_id))["action"] == "relaunched"
    outcome = instance_ends(track, current_instance(job_id))

    assert (outcome["action"], outcome["ended"]) == ("failed", "failed")
    job = JobStore(wiring.registry()).get(job_id)
    assert job.state == JobState.FAILED
    assert "gave up after 2 failed attempts" in (job.reason or "")


def test_the_watchdog_terminates_a_dropflow_instance_that_serves_no_job(stack, track):
    ec2 = boto3.client("ec2", region_name=REGION)
    tags = {
        "dropflow:managed": "true",
        "dropflow:stack": STACK,
        "DROPFLOW_JOB_ID": f"{MODEL}-20261123T000000Z-abcdef",
        "DROPFLOW_ATTEMPT": "1",
    }
    (orphan,) = ec2.run_instances(
        LaunchTemplate={"LaunchTemplateId": stack.launch_template_id},
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            }
        ],
    )["Instances"]

    results = track.lambda_handler(sample("schedule-watchdog.json"), LambdaContext())["results"]

    assert [r["action"] for r in results] == ["terminated"]
    assert "orphan instance" in results[0]["message"]
    (state,) = [
        i["State"]["Name"]
        for r in ec2.describe_instances(InstanceIds=[orphan["InstanceId"]])["Reservations"]
        for i in r["Instances"]
    ]
    assert state in ("shutting-down", "terminated")
