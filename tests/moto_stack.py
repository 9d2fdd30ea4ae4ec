"""The stack's AWS resources, made under moto as template.yaml declares them.

The bucket, the registry table (key schema, billing mode and TTL attribute) and the training
launch template are read from the template itself, so a change there reaches these tests.
What moto cannot hold (an instance profile of a stack that was never deployed) is left out,
and names the tests need not resolve (layer ARNs) become placeholders. Works in-process
under `mock_aws()` and against a moto server alike: the clients are plain boto3 clients,
which follow AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import base64
import copy
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

import boto3

from dropflow_dev.invoke import load_template

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
STACK = "dropflow-test"
ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
MANAGED_TAG = {"Name": "tag:dropflow:managed", "Values": ["true"]}
# The stack owner's on-demand prices (USD/hour) of the default training types.
ON_DEMAND_PRICES = (
    '{"g6.xlarge": 0.8048, "g5.xlarge": 1.006, "g4dn.xlarge": 0.526, '
    '"g6.2xlarge": 0.9776, "g5.2xlarge": 1.212}'
)
_SUB = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class Stack:
    """What a deployed stack hands its functions: names and ids of its resources."""

    bucket: str
    table: str
    launch_template_id: str
    subnet_ids: tuple[str, ...]
    user_data: str  # the launch template's bootstrap script, substituted as CloudFormation would

    def environment(self) -> dict[str, str]:
        """The functions' DROPFLOW_* variables, as template.yaml's Globals set them."""
        return {
            "DROPFLOW_STORE_URL": f"s3://{self.bucket}",
            "DROPFLOW_REGISTRY_URL": f"dynamodb://{self.table}",
            "DROPFLOW_COMPUTE_URL": f"ec2://{self.launch_template_id}",
            "DROPFLOW_TRAINING_SUBNET_IDS": ",".join(self.subnet_ids),
            "DROPFLOW_STACK_NAME": STACK,
            # The stack parameter TrainingOnDemandPrices, set: moto has no Price List API,
            # and a type without an on-demand price is never launched.
            "DROPFLOW_ON_DEMAND_PRICES": ON_DEMAND_PRICES,
        }

    def bootstrap_exports(self) -> dict[str, str]:
        """The `export NAME=value` lines of the user data whose value is a plain word (the
        store, the registry, the region): what every training instance starts with."""
        found = re.findall(r"^\s*export ([A-Z_][A-Z0-9_]*)=([^\s$`\"']+)\s*$", self.user_data, re.M)
        return dict(found)


def create_registry_table(client: Any, name: str) -> None:
    """The template's RegistryTable (key schema, billing mode, TTL attribute) named `name`:
    create_stack's, and the table of the DynamoDB adapter's own tests."""
    props = load_template(TEMPLATE)["Resources"]["RegistryTable"]["Properties"]
    client.create_table(
        TableName=name,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode=props["BillingMode"],
    )
    ttl = props["TimeToLiveSpecification"]
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": ttl["Enabled"], "AttributeName": ttl["AttributeName"]},
    )


def holding(lock: Any, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method`, called only while holding `lock`: for making a moto backend's calls (or a
    shared object's) atomic, as each AWS call is, in tests that run many threads."""

    @wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return locked


def deploy_stack(monkeypatch: Any, endpoint: str | None = None) -> Stack:
    """Create the stack on moto (in-process, or the server at `endpoint`) and give this process
    the functions' environment pointing at it, and nothing of the developer's shell or of an
    earlier test's `dropflow local` configuration. Call services.reset() after it."""
    stale = [name for name in os.environ if name.startswith("DROPFLOW_")]
    for name in ("AWS_ENDPOINT_URL", "AWS_EC2_METADATA_SERVICE_ENDPOINT", *stale):
        monkeypatch.delenv(name, raising=False)
    if endpoint is not None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    # Credentials ("testing") and the region come from tests/conftest.py's _no_real_aws.
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    made = create_stack()
    for name, value in made.environment().items():
        monkeypatch.setenv(name, value)
    return made


def create_stack(region: str = REGION) -> Stack:
    """Create the bucket, the table and the training network and launch template."""
    resources = load_template(TEMPLATE)["Resources"]
    s3 = boto3.client("s3", region_name=region)
    dynamodb = boto3.client("dynamodb", region_name=region)
    ec2 = boto3.client("ec2", region_name=region)

    names: dict[str, Any] = {
        "AWS::StackName": STACK,
        "AWS::AccountId": ACCOUNT,
        "AWS::Region": region,
    }
    # CloudFormation names the bucket and the table (template.yaml sets no name): the stack
    # name, the logical id and a random suffix, lower case for the bucket.
    bucket = f"{STACK}-databucket-1a2b3c4d5e6f".lower()
    s3.create_bucket(Bucket=bucket)  # us-east-1: no LocationConstraint
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    table = f"{STACK}-RegistryTable-1A2B3C4D5E6F"
    create_registry_table(dynamodb, table)

    vpc_id = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet_ids = tuple(
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=f"{region}{zone}")[
            "Subnet"
        ]["SubnetId"]
        for cidr, zone in (("10.30.1.0/24", "a"), ("10.30.2.0/24", "b"))
    )
    group_id = ec2.create_security_group(
        GroupName=f"{STACK}-training", Description="training", VpcId=vpc_id
    )["GroupId"]
    names |= {
        "DataBucket": bucket,
        "RegistryTable": table,
        "TrainingAmiId": ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"],
        "TrainingImage.RootDeviceName": "/dev/xvda",
        "TrainingBundle.Key": "code/training-1-0011223344556677.zip",
        "AWS::URLSuffix": "amazonaws.com",
        "TrainingVolumeGiB": 100,  # a Number parameter
        "TrainingSecurityGroup.GroupId": group_id,
    }
    data = dict(resources["TrainingLaunchTemplate"]["Properties"]["LaunchTemplateData"])
    # The stack's instance profile does not exist here, and moto would refuse its ARN.
    data.pop("IamInstanceProfile", None)
    data = _resolve(data, names)
    template_id = ec2.create_launch_template(
        LaunchTemplateName=f"{STACK}-training", LaunchTemplateData=data
    )["LaunchTemplate"]["LaunchTemplateId"]
    user_data = base64.b64decode(data.get("UserData", "")).decode()
    return Stack(bucket, table, template_id, subnet_ids, user_data)


def count_create_fleet(ec2: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Two lists that fill as the client `ec2` sends CreateFleet: one entry per call about to
    go on the wire (botocore's before-call; retries of one call are not counted again), and
    each call's parameters (before-parameter-build)."""
    calls: list[str] = []
    sent: list[dict[str, Any]] = []

    def sending(model: Any, **_: Any) -> None:
        calls.append(model.name)

    def building(params: dict[str, Any], **_: Any) -> None:
        sent.append(copy.deepcopy(params))

    ec2.meta.events.register("before-call.ec2.CreateFleet", sending)
    ec2.meta.events.register("before-parameter-build.ec2.CreateFleet", building)
    return calls, sent


def _resolve(node: Any, names: dict[str, Any]) -> Any:
    """The template fragment with Ref, Fn::Sub, Fn::GetAtt and Fn::Base64 worked out."""
    if isinstance(node, list):
        return [_resolve(item, names) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return _value(node["Ref"], names)
    if set(node) == {"Fn::GetAtt"}:
        return _value(".".join(node["Fn::GetAtt"]), names)
    if set(node) == {"Fn::Base64"}:
        return base64.b64encode(str(_resolve(node["Fn::Base64"], names)).encode()).decode()
    if set(node) == {"Fn::Sub"}:
        text = node["Fn::Sub"]
        # ${!X} is CloudFormation's escape for a literal ${X} (here: bash variables).
        return _SUB.sub(
            lambda m: (
                "${" + m.group(1)[1:] + "}"
                if m.group(1).startswith("!")
                else str(_value(m.group(1), names))
            ),
            text,
        )
    return {key: _resolve(value, names) for key, value in node.items()}


def _value(name: str, names: dict[str, Any]) -> Any:
    # Anything else (layer ARNs in the bootstrap script...) only needs to be a string here.
    return names.get(name, f"unresolved-{name}")
