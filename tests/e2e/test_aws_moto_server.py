"""The AWS loop end to end against moto_server over HTTP: drop -> CreateFleet -> train on the
"instance" -> card.json -> promote -> predict -> the instance's end tracked.

A ThreadedMotoServer on 127.0.0.1 stands in for S3, DynamoDB, EC2 and EventBridge; every
boto3 client finds it through AWS_ENDPOINT_URL, the functions' handlers are called with the
sample events of events/ (bucket, keys and ids adjusted), and the training instance is
played by `python -m training` in a child process, with the environment the launch template's
user data gives a real instance: its exports and the instance's DROPFLOW_* tags.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from dropflow import wiring
from dropflow.records.jobs import JobState, JobStore
from dropflow.vocabulary.card import card_key
from dropflow_dev.demo import DEFAULT_TARGET, breast_cancer_csv
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import load_handler
from tests.moto_stack import (
    MANAGED_TAG,
    REGION,
    Stack,
    count_create_fleet,
    deploy_stack,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
]

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
MODEL = "breast-cancer"
DATA_KEY = f"datasets/{MODEL}/data.csv"
# Few epochs: the test is about the plumbing, not the model.
SPEC = b"target: diagnosis\ntraining:\n  epochs: 3\n  batch_size: 64\n"
TRAINING_SECONDS = 300  # the child's budget; training 3 epochs on CPU takes seconds
TAG_VARIABLE = re.compile(r"^DROPFLOW_[A-Z0-9_]+$")  # the user data's filter on tags


def sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def s3_event(name: str, bucket: str, key: str) -> dict[str, Any]:
    event = sample(name)
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"]["key"] = key
    return event


@pytest.fixture
def stack(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, atomic_moto_dynamodb
) -> Iterator[Stack]:
    """The stack's resources on the server, and the functions' environment pointing at them."""
    made = deploy_stack(monkeypatch, moto_server)
    wiring.reset()
    yield made
    wiring.reset()


def handler(function: str) -> ModuleType:
    """A function's app.py in a fresh execution environment (its cold start runs now)."""
    return load_handler(ROOT / "functions" / function / "app.py")


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def instance_environment(stack: Stack, instance: dict[str, Any], endpoint: str) -> dict[str, str]:
    """What the user data hands `python -m training` on this instance: its own exports, the
    instance id, and every DROPFLOW_* tag; plus what the instance has without asking (a
    PATH, credentials from its role: fake ones here, and the way to the AWS APIs: moto)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": endpoint,
        **stack.bootstrap_exports(),
        "DROPFLOW_INSTANCE_ID": instance["InstanceId"],
    }
    assert TAG_VARIABLE.pattern in stack.user_data, "the user data filters tags differently"
    env |= {k: v for k, v in tags_of(instance).items() if TAG_VARIABLE.match(k)}
    return env


def play_the_instance(env: dict[str, str], log: Path) -> subprocess.CompletedProcess[str]:
    """Run the training entrypoint as the user data does; the child is killed if it outlives
    its budget (subprocess.run kills it on the timeout and on any error)."""
    with log.open("w") as out:
        return subprocess.run(
            [sys.executable, "-m", "training"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TRAINING_SECONDS,
            check=False,
        )


def rows_of(csv_bytes: bytes, count: int) -> tuple[list[dict[str, float]], list[str]]:
    """The first `count` rows of the dataset as {feature: value} instances, and their labels."""
    reader = csv.DictReader(io.StringIO(csv_bytes.decode()))
    rows, labels = [], []
    for row in reader:
        labels.append(row.pop(DEFAULT_TARGET))
        rows.append({name: float(value) for name, value in row.items()})
        if len(rows) == count:
            break
    return rows, labels


def test_a_drop_is_trained_on_a_fleet_instance_promoted_and_served(stack, moto_server, tmp_path):
    s3 = boto3.client("s3")
    ec2 = boto3.client("ec2")
    data = breast_cancer_csv()
    s3.put_object(Bucket=stack.bucket, Key=f"datasets/{MODEL}/dropflow.yaml", Body=SPEC)
    s3.put_object(Bucket=stack.bucket, Key=DATA_KEY, Body=data)

    # The drop event launches one job on one fleet instance tagged with the job.
    launch = handler("launch_training")
    create_fleet_calls, _ = count_create_fleet(wiring.compute().client)
    launched = launch.lambda_handler(
        s3_event("s3-dataset-created.json", stack.bucket, DATA_KEY), LambdaContext()
    )
    [outcome] = launched["results"]
    assert outcome["action"] == "launched", outcome
    assert len(create_fleet_calls) == 1
    job_id = outcome["job_id"]
    reservations = ec2.describe_instances(
        Filters=[MANAGED_TAG, {"Name": "tag:DROPFLOW_JOB_ID", "Values": [job_id]}]
    )["Reservations"]
    [instance] = [i for r in reservations for i in r["Instances"]]
    tags = tags_of(instance)
    assert (tags["DROPFLOW_MODEL"], tags["DROPFLOW_ATTEMPT"]) == (MODEL, "1")
    assert tags["dropflow:stack"] == "dropflow-test"
    assert instance["InstanceLifecycle"] == "spot"
    assert instance["SubnetId"] in stack.subnet_ids

    # The instance runs the job; it publishes a version whose card is written last.
    env = instance_environment(stack, instance, moto_server)
    assert env["DROPFLOW_STORE_URL"] == f"s3://{stack.bucket}", "the user data's exports"
    log = tmp_path / "instance.log"
    finished = play_the_instance(env, log)
    assert finished.returncode == 0, log.read_text()[-4000:]
    cards = s3.list_objects_v2(Bucket=stack.bucket, Prefix=f"models/{MODEL}/")["Contents"]
    [card] = [c["Key"] for c in cards if c["Key"].endswith("/card.json")]
    version = card.split("/")[2]
    assert card == card_key(MODEL, version)
    assert JobStore(wiring.registry()).get(job_id).state == JobState.PUBLISHED

    # The card's Object Created event promotes the version.
    promoted = handler("promote_model").lambda_handler(
        s3_event("s3-model-card-created.json", stack.bucket, card), LambdaContext()
    )
    assert (promoted["decision"], promoted["version"]) == ("approved", version), promoted

    # The API serves it.
    rows, labels = rows_of(data, 3)
    request = sample("apigw-predict.json")
    request["body"] = json.dumps({"instances": rows})
    answer = handler("predict").lambda_handler(request, LambdaContext())
    assert answer["statusCode"] == HTTPStatus.OK, answer
    body = json.loads(answer["body"])
    assert (body["model"], body["version"]) == (MODEL, version)
    assert len(body["predictions"]) == len(rows)
    assert set(body["predictions"]) <= set(labels) | {"malignant", "benign"}
    assert body["served_by"] == "lambda"  # a small model is served by the function itself

    # The job shuts its instance down; EC2's state-change event ends the job cleanly.
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    event = copy.deepcopy(sample("ec2-state-change.json"))
    event["detail"] = {"instance-id": instance["InstanceId"], "state": "terminated"}
    event["resources"] = [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance['InstanceId']}"]
    tracked = handler("track_training").lambda_handler(event, LambdaContext())
    assert (tracked["action"], tracked["job_id"]) == ("finished", job_id), tracked
    job = JobStore(wiring.registry()).get(job_id)
    assert job.state == JobState.PUBLISHED
    [attempt] = job.attempts
    assert attempt.instance_id == instance["InstanceId"]
    assert attempt.ended_at is not None
    assert wiring.launcher().active_job(MODEL) is None, "the model's slot is free again"
