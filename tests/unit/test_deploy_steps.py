"""The deploy-time steps of functions/deploy: what each answers CloudFormation, and why it refuses.

Each step runs as Lambda runs it: its folder on sys.path (modules import `custom_resource` as a
top-level module), the handler given a CloudFormation request event, the answer captured where
it would be PUT to the presigned ResponseURL. EC2 and Lambda answer through botocore's Stubber,
shaped as the API references document them (DescribeImages, DescribeSubnets,
DescribeRouteTables, DescribePrefixLists, DescribeVpcEndpoints, GetLayerVersionByArn); the
training bundle lands in a moto S3 bucket.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "functions" / "deploy"
REGION = "us-east-1"
ACCOUNT = "123456789012"
RESPONSE_URL = (
    "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/"
    "arn%3Aaws%3Acloudformation%3Aus-east-1%3A123456789012%3Astack/dropflow/1|R|r-1"
    "?X-Amz-Signature=abc"
)
STACK_ID = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/dropflow/0f1e2d3c-4b5a-6978"


# ------------------------------------------------------------------ the Lambda around a step


@pytest.fixture
def deploy_module(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Import a module of functions/deploy as Lambda does: its folder first on sys.path."""
    monkeypatch.syspath_prepend(str(DEPLOY))

    def load(name: str) -> ModuleType:
        module = importlib.import_module(name)
        # A same-named module from elsewhere would test the wrong code.
        assert Path(module.__file__).parent == DEPLOY
        return module

    return load


class Cloudformation:
    """The far end of urlopen: the answers PUT to ResponseURL, and URLs serving bytes."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.served: dict[str, bytes] = {}

    def urlopen(self, request: Any, timeout: float) -> Any:
        if isinstance(request, str):
            return io.BytesIO(self.served[request])
        assert request.get_method() == "PUT" and request.full_url == RESPONSE_URL
        # Presigned without a content type: any other value breaks the signature.
        assert request.get_header("Content-type") == ""
        self.bodies.append(request.data)
        self.answers.append(json.loads(request.data))
        return io.BytesIO(b"")

    @property
    def answer(self) -> dict[str, Any]:
        (answer,) = self.answers
        return answer


@pytest.fixture
def cloudformation(monkeypatch: pytest.MonkeyPatch) -> Cloudformation:
    far_end = Cloudformation()
    monkeypatch.setattr(urllib.request, "urlopen", far_end.urlopen)
    return far_end


def event(
    request_type: str,
    logical_id: str,
    properties: dict[str, Any],
    *,
    physical_id: str | None = None,
    old_properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A CloudFormation custom-resource request as the Lambda function receives it."""
    body: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:dropflow-{logical_id}",
        "ResponseURL": RESPONSE_URL,
        "StackId": STACK_ID,
        "RequestId": f"{request_type.lower()}-5d5d5d5d",
        "LogicalResourceId": logical_id,
        "ResourceType": f"Custom::{logical_id}",
        "ResourceProperties": {"ServiceToken": "arn:token", **properties},
    }
    if physical_id is not None:
        body["PhysicalResourceId"] = physical_id
    if old_properties is not None:
        body["OldResourceProperties"] = {"ServiceToken": "arn:token", **old_properties}
    return body


def no_aws(service: str) -> Any:
    pytest.fail(f"the step made a {service} client where it needs no AWS call")


# ------------------------------------------------------------------ custom_resource.handler_for


@pytest.fixture
def custom_resource(deploy_module) -> ModuleType:
    return deploy_module("custom_resource")


def test_a_step_that_succeeds_answers_its_id_and_data_with_the_requests_ids(
    custom_resource, cloudformation
):
    handler = custom_resource.handler_for(
        lambda request: custom_resource.Answer("thing-1", {"Key": "v"}, reason="made thing-1")
    )

    handler(event("Create", "Thing", {"Size": "3"}), None)

    assert cloudformation.answer == {
        "Status": "SUCCESS",
        "Reason": "made thing-1",
        "PhysicalResourceId": "thing-1",
        "StackId": STACK_ID,
        "RequestId": "create-5d5d5d5d",
        "LogicalResourceId": "Thing",
        "Data": {"Key": "v"},
    }


def test_the_step_receives_the_request_type_properties_old_properties_and_physical_id(
    custom_resource, cloudformation
):
    seen = []

    def step(request):
        seen.append(request)
        return custom_resource.Answer(request.physical_id)

    custom_resource.handler_for(step)(
        event("Update", "Thing", {"Size": "4"}, physical_id="thing-1", old_properties={"Size": 3}),
        None,
    )

    (request,) = seen
    assert request.type == "Update"
    assert request.properties["Size"] == "4"
    assert request.old_properties["Size"] == 3
    assert request.physical_id == "thing-1"


def test_a_refused_step_fails_the_deploy_with_its_message_as_the_reason(
    custom_resource, cloudformation
):
    def step(request):
        raise custom_resource.StepRefused("Size: 4 is too big; set Size to 3 or less")

    custom_resource.handler_for(step)(
        event("Update", "Thing", {"Size": "4"}, physical_id="thing-1"), None
    )

    answer = cloudformation.answer
    assert answer["Status"] == "FAILED"
    assert answer["Reason"] == "Size: 4 is too big; set Size to 3 or less"
    # A failed Update keeps the resource it had.
    assert answer["PhysicalResourceId"] == "thing-1"


def test_an_unexpected_exception_fails_the_deploy_with_its_type_and_message(
    custom_resource, cloudformation
):
    def step(request):
        raise ValueError("invalid literal for int() with base 10: 'big'")

    custom_resource.handler_for(step)(event("Create", "Thing", {"Size": "big"}), None)

    answer = cloudformation.answer
    assert answer["Status"] == "FAILED"
    assert answer["Reason"] == "ValueError: invalid literal for int() with base 10: 'big'"


def test_a_failed_create_answers_its_logical_id_for_a_physical_id(custom_resource, cloudformation):
    def step(request):
        raise custom_resource.StepRefused("no")

    custom_resource.handler_for(step)(event("Create", "Thing", {}), None)

    assert cloudformation.answer["PhysicalResourceId"] == "Thing"


@pytest.mark.parametrize("char", ["x", "é", "\u2192"], ids=["ascii", "accented", "arrow"])
def test_a_long_reason_is_cut_to_fit_cloudformations_4_kb_response(
    custom_resource, cloudformation, char
):
    reason = "subnet-0a: " + char * 20_000

    def step(request):
        raise custom_resource.StepRefused(reason)

    custom_resource.handler_for(step)(event("Create", "Thing", {}), None)

    (body,) = cloudformation.bodies
    assert len(body) <= 4096
    answer = cloudformation.answer
    assert answer["Status"] == "FAILED"
    # As much of the reason as fits, then a word that it was cut and where the rest is.
    kept, _, notice = answer["Reason"].partition(" ... ")
    assert reason.startswith(kept) and len(kept) > 400
    assert "whole reason is in the step's log" in notice
    assert answer["PhysicalResourceId"] == "Thing" and answer["RequestId"] == "create-5d5d5d5d"


def test_a_reason_that_fits_is_sent_whole(custom_resource, cloudformation):
    reason = "r" * 3500

    def step(request):
        raise custom_resource.StepRefused(reason)

    custom_resource.handler_for(step)(event("Create", "Thing", {}), None)

    assert cloudformation.answer["Reason"] == reason


# ------------------------------------------------------------------ training_image

AMI = "ami-0a1b2c3d4e5f60718"


def image(
    *,
    root: str = "/dev/xvda",
    architecture: str = "x86_64",
    snapshot_gib: int = 75,
    name: str = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.13 (Amazon Linux 2023) 20260105",
    owner: str = "898082745236",
    state: str = "available",
    root_type: str = "ebs",
    extra_mappings: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """One entry of DescribeImages' Images, as EC2 answers it."""
    return {
        "PlatformDetails": "Linux/UNIX",
        "UsageOperation": "RunInstances",
        "BlockDeviceMappings": [
            {
                "Ebs": {
                    "DeleteOnTermination": True,
                    "Iops": 3000,
                    "SnapshotId": "snap-0fedcba9876543210",
                    "VolumeSize": snapshot_gib,
                    "VolumeType": "gp3",
                    "Throughput": 125,
                    "Encrypted": False,
                },
                "DeviceName": root,
            },
            *extra_mappings,
        ],
        "Description": f"Supported EC2 instances: G4dn, G5, G6 ... {name}",
        "EnaSupport": True,
        "Hypervisor": "xen",
        "ImageOwnerAlias": "amazon",
        "Name": name,
        "RootDeviceName": root,
        "RootDeviceType": root_type,
        "SriovNetSupport": "simple",
        "VirtualizationType": "hvm",
        "BootMode": "uefi-preferred",
        "DeprecationTime": "2028-01-05T00:00:00.000Z",
        "ImageId": AMI,
        "ImageLocation": f"amazon/{name}",
        "State": state,
        "OwnerId": owner,
        "CreationDate": "2026-01-05T10:20:30.000Z",
        "Public": True,
        "Architecture": architecture,
        "ImageType": "machine",
    }


@pytest.fixture
def training_image(deploy_module, cloudformation, monkeypatch):
    """Run TrainingImageFunction's handler against a Stubber'd EC2 client."""
    module = deploy_module("training_image")
    ec2 = boto3.client("ec2", region_name=REGION)
    stubber = Stubber(ec2)

    def run(request_type: str = "Create", volume_gib: str = "150", **kwargs) -> dict[str, Any]:
        with stubber:
            module.handler(
                event(
                    request_type,
                    "TrainingImage",
                    {"ImageId": AMI, "VolumeGiB": volume_gib},
                    **kwargs,
                ),
                None,
            )
            stubber.assert_no_pending_responses()
        return cloudformation.answer

    monkeypatch.setattr(module, "boto3", SimpleNamespace(client=lambda service: ec2))
    return SimpleNamespace(stubber=stubber, run=run, module=module)


def _images(stubber: Stubber, *images: dict[str, Any]) -> None:
    stubber.add_response("describe_images", {"Images": list(images)}, {"ImageIds": [AMI]})


def test_an_amazon_linux_ami_answers_its_root_device_dev_xvda(training_image):
    _images(training_image.stubber, image(root="/dev/xvda"))

    answer = training_image.run()

    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == AMI
    assert answer["Data"]["RootDeviceName"] == "/dev/xvda"
    assert answer["Data"]["Name"].startswith("Deep Learning OSS Nvidia Driver AMI GPU PyTorch")


def test_an_ubuntu_ami_answers_its_root_device_dev_sda1(training_image):
    ubuntu = image(
        root="/dev/sda1",
        name="Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.13 (Ubuntu 24.04) 20260105",
        owner="898082745236",
        extra_mappings=(
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
            {"DeviceName": "/dev/sdc", "VirtualName": "ephemeral1"},
        ),
    )
    _images(training_image.stubber, ubuntu)

    answer = training_image.run()

    assert answer["Status"] == "SUCCESS"
    assert answer["Data"]["RootDeviceName"] == "/dev/sda1"


def test_an_arm64_ami_is_refused_naming_the_parameter_and_x86_64(training_image):
    _images(training_image.stubber, image(architecture="arm64"))

    answer = training_image.run()

    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("TrainingAmiId:")
    assert AMI in answer["Reason"] and "arm64" in answer["Reason"]
    assert "x86_64" in answer["Reason"]
    assert answer["PhysicalResourceId"] == "TrainingImage"


def test_a_root_snapshot_larger_than_the_volume_is_refused_naming_the_volume_parameter(
    training_image,
):
    _images(training_image.stubber, image(snapshot_gib=200))

    answer = training_image.run(volume_gib="150")

    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("TrainingVolumeGiB is 150")
    assert "200 GiB" in answer["Reason"]
    assert "set TrainingVolumeGiB to 200 or more" in answer["Reason"]


def test_a_root_snapshot_as_large_as_the_volume_is_accepted(training_image):
    _images(training_image.stubber, image(snapshot_gib=150))

    assert training_image.run(volume_gib="150")["Status"] == "SUCCESS"


def test_an_image_no_one_can_see_is_refused_naming_the_parameter(training_image):
    _images(training_image.stubber)

    answer = training_image.run()

    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("TrainingAmiId:")
    assert f"no image {AMI}" in answer["Reason"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("InvalidAMIID.NotFound", f"The image id '[{AMI}]' does not exist"),
        ("InvalidAMIID.Malformed", f'Invalid id: "{AMI}" (expecting "ami-...")'),
    ],
)
def test_an_ami_id_ec2_does_not_know_is_refused_naming_the_parameter(training_image, code, message):
    training_image.stubber.add_client_error(
        "describe_images",
        service_error_code=code,
        service_message=message,
        http_status_code=400,
        expected_params={"ImageIds": [AMI]},
    )

    answer = training_image.run()

    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(f"TrainingAmiId: {AMI} cannot be used here ({code}")
    assert message in answer["Reason"]


def test_a_permission_error_is_not_blamed_on_the_ami(training_image):
    training_image.stubber.add_client_error(
        "describe_images",
        service_error_code="UnauthorizedOperation",
        service_message="You are not authorized to perform this operation.",
        http_status_code=403,
        expected_params={"ImageIds": [AMI]},
    )

    answer = training_image.run()

    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("ClientError: ")
    assert "UnauthorizedOperation" in answer["Reason"]
    assert "TrainingAmiId" not in answer["Reason"]


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"state": "disabled"}, "is disabled"),
        ({"state": "pending"}, "is pending"),
        ({"root_type": "instance-store"}, "instance-store root"),
    ],
)
def test_an_ami_that_cannot_launch_is_refused_naming_the_parameter(training_image, changes, said):
    _images(training_image.stubber, image(**changes))

    answer = training_image.run()

    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(f"TrainingAmiId: {AMI}")
    assert said in answer["Reason"]


def test_deleting_the_training_image_makes_no_aws_call(training_image, monkeypatch):
    monkeypatch.setattr(training_image.module, "boto3", SimpleNamespace(client=no_aws))

    answer = training_image.run("Delete", physical_id=AMI)

    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == AMI


# ------------------------------------------------------------------ network (SubnetReach)

VPC = "vpc-0a1b2c3d4e5f67890"
SUBNET = "subnet-0aaa1111bbbb2222c"
TABLE = "rtb-0123456789abcdef0"
MAIN_TABLE = "rtb-0main0000000000000"
S3_PL, DYNAMODB_PL = "pl-63a5400a", "pl-02cd2c6b"
SERVING = ["s3", "dynamodb", "ecr.api", "ecr.dkr", "logs"]
TRAINING = ["s3", "dynamodb"]

LOCAL = {
    "DestinationCidrBlock": "10.0.0.0/16",
    "GatewayId": "local",
    "Origin": "CreateRouteTable",
    "State": "active",
}
NAT = {
    "DestinationCidrBlock": "0.0.0.0/0",
    "NatGatewayId": "nat-0a1b2c3d4e5f67890",
    "Origin": "CreateRoute",
    "State": "active",
}
IGW = {
    "DestinationCidrBlock": "0.0.0.0/0",
    "GatewayId": "igw-0c0ffee0c0ffee000",
    "Origin": "CreateRoute",
    "State": "active",
}
GATEWAY_ENDPOINTS = [
    {
        "DestinationPrefixListId": S3_PL,
        "GatewayId": "vpce-0s3s3s3s3s3s3s3s3",
        "Origin": "CreateRoute",
        "State": "active",
    },
    {
        "DestinationPrefixListId": DYNAMODB_PL,
        "GatewayId": "vpce-0dd0dd0dd0dd0dd0d",
        "Origin": "CreateRoute",
        "State": "active",
    },
]


def subnet(*, map_public_ip: bool = False) -> dict[str, Any]:
    """One entry of DescribeSubnets' Subnets."""
    return {
        "AvailabilityZone": "us-east-1a",
        "AvailabilityZoneId": "use1-az1",
        "AvailableIpAddressCount": 4091,
        "CidrBlock": "10.0.16.0/20",
        "DefaultForAz": False,
        "MapPublicIpOnLaunch": map_public_ip,
        "MapCustomerOwnedIpOnLaunch": False,
        "State": "available",
        "SubnetId": SUBNET,
        "VpcId": VPC,
        "OwnerId": ACCOUNT,
        "AssignIpv6AddressOnCreation": False,
        "Ipv6CidrBlockAssociationSet": [],
        "Tags": [{"Key": "Name", "Value": "private-a"}],
        "SubnetArn": f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/{SUBNET}",
        "EnableDns64": False,
        "Ipv6Native": False,
        "PrivateDnsNameOptionsOnLaunch": {
            "HostnameType": "ip-name",
            "EnableResourceNameDnsARecord": False,
            "EnableResourceNameDnsAAAARecord": False,
        },
    }


def route_table(routes: list[dict[str, Any]], *, main: bool = False) -> dict[str, Any]:
    """One entry of DescribeRouteTables' RouteTables."""
    table_id = MAIN_TABLE if main else TABLE
    association: dict[str, Any] = {
        "Main": main,
        "RouteTableAssociationId": "rtbassoc-0f0e0d0c0b0a09080",
        "RouteTableId": table_id,
        "AssociationState": {"State": "associated"},
    }
    if not main:
        association["SubnetId"] = SUBNET
    return {
        "Associations": [association],
        "PropagatingVgws": [],
        "RouteTableId": table_id,
        "Routes": [LOCAL, *routes],
        "Tags": [],
        "VpcId": VPC,
        "OwnerId": ACCOUNT,
    }


def interface_endpoint(
    service: str, *, private_dns: bool = True, state: str = "available"
) -> dict[str, Any]:
    """One entry of DescribeVpcEndpoints' VpcEndpoints for an interface endpoint."""
    name = f"com.amazonaws.{REGION}.{service}"
    return {
        "VpcEndpointId": "vpce-0" + hashlib.sha256(service.encode()).hexdigest()[:16],
        "VpcEndpointType": "Interface",
        "VpcId": VPC,
        "ServiceName": name,
        "State": state,
        "PolicyDocument": (
            '{"Statement":[{"Action":"*","Effect":"Allow","Principal":"*","Resource":"*"}]}'
        ),
        "RouteTableIds": [],
        "SubnetIds": [SUBNET],
        "Groups": [{"GroupId": "sg-0e0e0e0e0e0e0e0e0", "GroupName": "endpoints"}],
        "IpAddressType": "ipv4",
        "DnsOptions": {"DnsRecordIpType": "ipv4"},
        "PrivateDnsEnabled": private_dns,
        "RequesterManaged": False,
        "NetworkInterfaceIds": ["eni-0a0a0a0a0a0a0a0a0"],
        "DnsEntries": [
            {
                "DnsName": f"vpce-0abc-xyz.{service}.{REGION}.vpce.amazonaws.com",
                "HostedZoneId": "Z7HUB22UULQXV",
            }
        ],
        "CreationTimestamp": datetime(2026, 1, 5, 10, 20, tzinfo=UTC),
        "Tags": [],
        "OwnerId": ACCOUNT,
    }


@pytest.fixture
def subnet_reach(deploy_module, cloudformation, monkeypatch):
    """Run SubnetReachFunction's handler against a Stubber'd EC2 client, scripted call by call
    in the order the step makes them."""
    module = deploy_module("network")
    ec2 = boto3.client("ec2", region_name=REGION)
    stubber = Stubber(ec2)
    monkeypatch.setattr(module, "boto3", SimpleNamespace(client=lambda service: ec2))

    def subnets(*entries: dict[str, Any]) -> None:
        stubber.add_response(
            "describe_subnets", {"Subnets": list(entries)}, {"SubnetIds": [SUBNET]}
        )
        stubber.add_response(
            "describe_prefix_lists",
            {
                "PrefixLists": [
                    {
                        "PrefixListName": f"com.amazonaws.{REGION}.s3",
                        "Cidrs": ["54.231.0.0/17", "52.216.0.0/15"],
                        "PrefixListId": S3_PL,
                    },
                    {
                        "PrefixListName": f"com.amazonaws.{REGION}.dynamodb",
                        "Cidrs": ["52.94.0.0/22", "52.119.224.0/20"],
                        "PrefixListId": DYNAMODB_PL,
                    },
                ]
            },
            {
                "Filters": [
                    {
                        "Name": "prefix-list-name",
                        "Values": [
                            f"com.amazonaws.{REGION}.s3",
                            f"com.amazonaws.{REGION}.dynamodb",
                        ],
                    }
                ]
            },
        )

    def own_table(tables: list[dict[str, Any]]) -> None:
        stubber.add_response(
            "describe_route_tables",
            {"RouteTables": tables},
            {"Filters": [{"Name": "association.subnet-id", "Values": [SUBNET]}]},
        )

    def main_table(tables: list[dict[str, Any]]) -> None:
        stubber.add_response(
            "describe_route_tables",
            {"RouteTables": tables},
            {
                "Filters": [
                    {"Name": "vpc-id", "Values": [VPC]},
                    {"Name": "association.main", "Values": ["true"]},
                ]
            },
        )

    def endpoints(*entries: dict[str, Any]) -> None:
        stubber.add_response(
            "describe_vpc_endpoints",
            {"VpcEndpoints": list(entries)},
            {
                "Filters": [
                    {"Name": "vpc-id", "Values": [VPC]},
                    {"Name": "vpc-endpoint-type", "Values": ["Interface"]},
                ]
            },
        )

    def run(
        parameter: str,
        services: list[str],
        public_ip: str,
        subnets_property: list[str] | None = None,
        request_type: str = "Create",
    ) -> dict[str, Any]:
        props = {
            "Parameter": parameter,
            "Subnets": [SUBNET] if subnets_property is None else subnets_property,
            "Services": services,
            "PublicIp": public_ip,
        }
        physical = {"physical_id": f"subnet-reach-{parameter}"} if request_type != "Create" else {}
        with stubber:
            module.handler(event(request_type, f"{parameter}Reach", props, **physical), None)
            stubber.assert_no_pending_responses()
        return cloudformation.answer

    return SimpleNamespace(
        stubber=stubber,
        module=module,
        subnets=subnets,
        own_table=own_table,
        main_table=main_table,
        endpoints=endpoints,
        run=run,
    )


def test_a_subnet_with_a_nat_default_route_reaches_every_service(subnet_reach):
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([route_table([NAT])])
    # The NAT route suffices: no endpoint is looked up.

    answer = subnet_reach.run("ServingSubnetIds", SERVING, "false")

    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == "subnet-reach-ServingSubnetIds"


@pytest.mark.parametrize(
    "route",
    [
        {"DestinationCidrBlock": "0.0.0.0/0", "TransitGatewayId": "tgw-0a0a0a0a0a0a0a0a0"},
        {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "vgw-0b0b0b0b0b0b0b0b0"},
        {"DestinationCidrBlock": "0.0.0.0/0", "NetworkInterfaceId": "eni-0c0c0c0c0c0c0c0c0"},
    ],
    ids=["transit-gateway", "virtual-private-gateway", "network-interface"],
)
def test_egress_the_check_cannot_see_past_is_trusted(subnet_reach, route):
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([route_table([{**route, "Origin": "CreateRoute", "State": "active"}])])

    assert subnet_reach.run("ServingSubnetIds", SERVING, "false")["Status"] == "SUCCESS"


def test_a_subnet_with_s3_and_dynamodb_gateway_endpoints_reaches_what_training_calls(
    subnet_reach,
):
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([route_table(GATEWAY_ENDPOINTS)])
    subnet_reach.endpoints()

    answer = subnet_reach.run("TrainingSubnetIds", TRAINING, "true")

    assert answer["Status"] == "SUCCESS"


def test_gateway_endpoints_alone_are_refused_for_serving_naming_what_is_missing_and_the_fix(
    subnet_reach,
):
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([route_table(GATEWAY_ENDPOINTS)])
    subnet_reach.endpoints()

    answer = subnet_reach.run("ServingSubnetIds", SERVING, "false")

    assert answer["Status"] == "FAILED"
    reason = answer["Reason"]
    assert reason.startswith("ServingSubnetIds: ")
    assert f"{SUBNET} (route table {TABLE}) cannot reach ecr.api, ecr.dkr, logs:" in reason
    commands = [part for part in reason.split("; ") if "aws ec2 create-vpc-endpoint" in part]
    assert len(commands) == 3
    for service, command in zip(["ecr.api", "ecr.dkr", "logs"], commands, strict=True):
        assert f"--service-name com.amazonaws.{REGION}.{service} " in command
        assert f"--vpc-id {VPC}" in command and "--vpc-endpoint-type Interface" in command
        assert f"--subnet-ids {SUBNET}" in command and "--private-dns-enabled" in command
    # Reached through their gateway endpoints: not named as missing.
    assert f"com.amazonaws.{REGION}.s3" not in reason
    assert f"com.amazonaws.{REGION}.dynamodb" not in reason


def test_gateway_endpoints_and_interface_endpoints_with_private_dns_reach_what_serving_calls(
    subnet_reach,
):
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([route_table(GATEWAY_ENDPOINTS)])
    subnet_reach.endpoints(
        interface_endpoint("ecr.api"), interface_endpoint("ecr.dkr"), interface_endpoint("logs")
    )

    answer = subnet_reach.run("ServingSubnetIds", SERVING, "false")

    assert answer["Status"] == "SUCCESS"


@pytest.mark.parametrize(
    "logs",
    [
        interface_endpoint("logs", private_dns=False),
        interface_endpoint("logs", state="pending"),
        interface_endpoint("logs", state="failed"),
    ],
    ids=["private-dns-off", "pending", "failed"],
)
def test_an_interface_endpoint_counts_only_available_with_private_dns(subnet_reach, logs):
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([route_table(GATEWAY_ENDPOINTS)])
    subnet_reach.endpoints(interface_endpoint("ecr.api"), interface_endpoint("ecr.dkr"), logs)

    answer = subnet_reach.run("ServingSubnetIds", SERVING, "false")

    assert answer["Status"] == "FAILED"
    assert f"{SUBNET} (route table {TABLE}) cannot reach logs:" in answer["Reason"]
    assert answer["Reason"].count("aws ec2 create-vpc-endpoint") == 1


def test_an_internet_gateway_counts_for_a_public_ip_subnet_that_assigns_one(subnet_reach):
    subnet_reach.subnets(subnet(map_public_ip=True))
    subnet_reach.own_table([route_table([IGW])])

    assert subnet_reach.run("TrainingSubnetIds", TRAINING, "true")["Status"] == "SUCCESS"


@pytest.mark.parametrize(
    ("public_ip", "map_public_ip"),
    [("true", False), ("false", True), ("false", False)],
    ids=["subnet-assigns-none", "parts-never-get-one", "neither"],
)
def test_an_internet_gateway_does_not_count_without_a_public_ip(
    subnet_reach, public_ip, map_public_ip
):
    subnet_reach.subnets(subnet(map_public_ip=map_public_ip))
    subnet_reach.own_table([route_table([IGW])])
    subnet_reach.endpoints()

    answer = subnet_reach.run("TrainingSubnetIds", TRAINING, public_ip)

    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(
        f"TrainingSubnetIds: {SUBNET} (route table {TABLE}) cannot reach s3, dynamodb:"
    )
    # Gateway endpoints: a route table command each.
    assert answer["Reason"].count(f"--route-table-ids {TABLE}") == 2


def test_a_subnet_without_its_own_route_table_uses_its_vpcs_main_one(subnet_reach):
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([])
    subnet_reach.main_table([route_table([], main=True)])
    subnet_reach.endpoints()

    answer = subnet_reach.run("TrainingSubnetIds", TRAINING, "true")

    assert answer["Status"] == "FAILED"
    assert f"{SUBNET} (route table {MAIN_TABLE}) cannot reach s3, dynamodb" in answer["Reason"]
    assert (
        f"aws ec2 create-vpc-endpoint --vpc-id {VPC} --service-name "
        f"com.amazonaws.{REGION}.s3 --route-table-ids {MAIN_TABLE}"
    ) in answer["Reason"]


def test_a_main_route_table_with_a_nat_route_lets_an_unassociated_subnet_pass(subnet_reach):
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([])
    subnet_reach.main_table([route_table([NAT], main=True)])

    assert subnet_reach.run("ServingSubnetIds", SERVING, "false")["Status"] == "SUCCESS"


def test_a_blackhole_nat_route_does_not_count(subnet_reach):
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([route_table([{**NAT, "State": "blackhole"}])])
    subnet_reach.endpoints()

    answer = subnet_reach.run("TrainingSubnetIds", TRAINING, "true")

    assert answer["Status"] == "FAILED"
    assert "cannot reach s3, dynamodb" in answer["Reason"]


def test_a_blackhole_gateway_endpoint_route_does_not_count(subnet_reach):
    s3_gone = [{**GATEWAY_ENDPOINTS[0], "State": "blackhole"}, GATEWAY_ENDPOINTS[1]]
    subnet_reach.subnets(subnet())
    subnet_reach.own_table([route_table(s3_gone)])
    subnet_reach.endpoints()

    answer = subnet_reach.run("TrainingSubnetIds", TRAINING, "true")

    assert answer["Status"] == "FAILED"
    assert f"{SUBNET} (route table {TABLE}) cannot reach s3:" in answer["Reason"]


def test_a_subnet_ec2_does_not_know_is_refused_naming_the_parameter(subnet_reach):
    subnet_reach.stubber.add_client_error(
        "describe_subnets",
        service_error_code="InvalidSubnetID.NotFound",
        service_message=f"The subnet ID '{SUBNET}' does not exist",
        http_status_code=400,
        expected_params={"SubnetIds": [SUBNET]},
    )

    answer = subnet_reach.run("ServingSubnetIds", SERVING, "false")

    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(f"ServingSubnetIds: {SUBNET}: InvalidSubnetID.NotFound")


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_an_empty_subnet_list_container_tier_off_does_nothing(
    subnet_reach, monkeypatch, request_type
):
    monkeypatch.setattr(subnet_reach.module, "boto3", SimpleNamespace(client=no_aws))

    # CloudFormation passes an empty CommaDelimitedList as one empty string.
    answer = subnet_reach.run(
        "ServingSubnetIds", SERVING, "false", subnets_property=[""], request_type=request_type
    )

    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == "subnet-reach-ServingSubnetIds"


def test_deleting_a_subnet_check_makes_no_aws_call(subnet_reach, monkeypatch):
    monkeypatch.setattr(subnet_reach.module, "boto3", SimpleNamespace(client=no_aws))

    answer = subnet_reach.run("TrainingSubnetIds", TRAINING, "true", request_type="Delete")

    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == "subnet-reach-TrainingSubnetIds"


# ------------------------------------------------------------------ training_bundle

BUCKET = "dropflow-databucket-1a2b3c4d5e6f"
LAYER_NAME = "TrainingCodeLayer5f6e7d8c9b"
LAYER = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{LAYER_NAME}"


def bundle_zip(marker: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("python/training/__init__.py", f"# {marker}\n")
        archive.writestr("python/wheels/README", "wheels for the job\n")
    return out.getvalue()


def layer_location(version: int) -> str:
    return (
        f"https://awslambda-{REGION}-layers.s3.{REGION}.amazonaws.com/snapshots/{ACCOUNT}/"
        f"{LAYER_NAME}-{version}-0a1b2c3d?versionId=v{version}&X-Amz-Signature=sig"
    )


def expected_key(version: int, content: bytes) -> str:
    return f"code/{LAYER_NAME}-{version}-{hashlib.sha256(content).hexdigest()[:16]}.zip"


@pytest.fixture
def training_bundle(deploy_module, cloudformation, monkeypatch) -> Iterator[SimpleNamespace]:
    """Run TrainingBundleFunction's handler: Lambda Stubber'd, S3 in moto, the layer's zip
    served at its presigned Location."""
    module = deploy_module("training_bundle")
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        lambda_ = boto3.client("lambda", region_name=REGION)
        stubber = Stubber(lambda_)
        clients = {"s3": s3, "lambda": lambda_}
        monkeypatch.setattr(
            module, "boto3", SimpleNamespace(client=lambda service: clients[service])
        )

        def layer(version: int, content: bytes, *, served: bytes | None = None) -> None:
            """GetLayerVersionByArn's answer for that version, its zip served at Location."""
            cloudformation.served[layer_location(version)] = content if served is None else served
            stubber.add_response(
                "get_layer_version_by_arn",
                {
                    "Content": {
                        "Location": layer_location(version),
                        "CodeSha256": base64.b64encode(hashlib.sha256(content).digest()).decode(),
                        "CodeSize": len(content),
                    },
                    "LayerArn": LAYER,
                    "LayerVersionArn": f"{LAYER}:{version}",
                    "Description": "The training bundle (training/Makefile).",
                    "CreatedDate": "2026-01-05T10:20:30.123+0000",
                    "Version": version,
                    "CompatibleRuntimes": [],
                    "CompatibleArchitectures": [],
                },
                {"Arn": f"{LAYER}:{version}"},
            )

        def run(request_type: str, layer_arn: str, **kwargs) -> dict[str, Any]:
            cloudformation.answers.clear()
            with stubber:
                module.handler(
                    event(
                        request_type,
                        "TrainingBundle",
                        {"LayerArn": layer_arn, "Bucket": BUCKET, "Prefix": "code/"},
                        **kwargs,
                    ),
                    None,
                )
                stubber.assert_no_pending_responses()
            return cloudformation.answer

        def keys() -> list[str]:
            return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]

        yield SimpleNamespace(s3=s3, layer=layer, run=run, keys=keys)


def test_create_copies_the_layer_zip_into_the_bucket_under_code(training_bundle):
    content = bundle_zip("v7")
    training_bundle.layer(7, content)

    answer = training_bundle.run("Create", f"{LAYER}:7")

    key = expected_key(7, content)
    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == key
    assert answer["Data"] == {"Key": key}
    stored = training_bundle.s3.get_object(Bucket=BUCKET, Key=key)
    assert stored["Body"].read() == content
    assert stored["ContentType"] == "application/zip"
    assert stored["Metadata"] == {"layer": f"{LAYER}:7"}
    assert training_bundle.keys() == [key]


def test_an_update_to_a_new_layer_version_writes_a_new_key(training_bundle):
    old, new = bundle_zip("v7"), bundle_zip("v8")
    training_bundle.layer(7, old)
    first = training_bundle.run("Create", f"{LAYER}:7")["PhysicalResourceId"]
    training_bundle.layer(8, new)

    answer = training_bundle.run(
        "Update", f"{LAYER}:8", physical_id=first, old_properties={"LayerArn": f"{LAYER}:7"}
    )

    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == expected_key(8, new) != first
    assert answer["Data"]["Key"] == expected_key(8, new)
    # The old one stays until CloudFormation's Delete of the replaced resource.
    assert sorted(training_bundle.keys()) == sorted([first, expected_key(8, new)])
    body = training_bundle.s3.get_object(Bucket=BUCKET, Key=expected_key(8, new))["Body"]
    assert body.read() == new


def test_delete_removes_the_object_named_by_the_physical_id(training_bundle):
    old, new = bundle_zip("v7"), bundle_zip("v8")
    for key, content in [(expected_key(7, old), old), (expected_key(8, new), new)]:
        training_bundle.s3.put_object(Bucket=BUCKET, Key=key, Body=content)

    answer = training_bundle.run("Delete", f"{LAYER}:7", physical_id=expected_key(7, old))

    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == expected_key(7, old)
    assert training_bundle.keys() == [expected_key(8, new)]


def test_delete_of_a_bundle_already_gone_succeeds(training_bundle):
    answer = training_bundle.run(
        "Delete", f"{LAYER}:7", physical_id=expected_key(7, bundle_zip("v7"))
    )

    assert answer["Status"] == "SUCCESS"


def test_delete_after_the_bucket_is_gone_succeeds(training_bundle):
    training_bundle.s3.delete_bucket(Bucket=BUCKET)

    answer = training_bundle.run(
        "Delete", f"{LAYER}:7", physical_id=expected_key(7, bundle_zip("v7"))
    )

    assert answer["Status"] == "SUCCESS"


@pytest.mark.parametrize("physical_id", ["TrainingBundle", "code/", "code/notes.txt"])
def test_delete_of_an_id_this_step_never_wrote_deletes_nothing(training_bundle, physical_id):
    # A failed Create answers its logical id; nothing else under code/ is this resource's.
    for key in ["TrainingBundle", "code/", "code/notes.txt"]:
        training_bundle.s3.put_object(Bucket=BUCKET, Key=key, Body=b"keep")

    answer = training_bundle.run("Delete", f"{LAYER}:7", physical_id=physical_id)

    assert answer["Status"] == "SUCCESS"
    assert sorted(training_bundle.keys()) == ["TrainingBundle", "code/", "code/notes.txt"]


@pytest.mark.parametrize(
    "layer_arn",
    [
        LAYER,  # the layer, not a version of it
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:dropflow-LaunchTraining",
        "TrainingCodeLayer",
    ],
)
def test_a_malformed_layer_arn_is_refused_before_any_call(training_bundle, layer_arn):
    answer = training_bundle.run("Create", layer_arn)

    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(f"LayerArn {layer_arn!r} is not a layer version ARN")
    assert answer["PhysicalResourceId"] == "TrainingBundle"
    assert training_bundle.keys() == []


def test_a_download_that_is_not_the_layers_zip_fails_and_keeps_nothing(training_bundle):
    content = bundle_zip("v7")
    training_bundle.layer(7, content, served=content[: len(content) // 2])

    answer = training_bundle.run("Create", f"{LAYER}:7")

    assert answer["Status"] == "FAILED"
    assert f"the copy of {LAYER}:7 read {len(content) // 2} bytes" in answer["Reason"]
    assert f"({len(content)} bytes)" in answer["Reason"]
    assert training_bundle.keys() == []
