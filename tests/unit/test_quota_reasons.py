"""A new account's vCPU quotas stop CreateFleet: the job's reason names each quota, its code,
and the command that raises it.

The launcher runs against the real EC2 adapter, whose CreateFleet answers are scripted with
botocore's Stubber in the shape EC2 gives them: an `instant` fleet reports every pool that
failed in `Errors` (ErrorCode, ErrorMessage, Lifecycle, the pool's overrides) and launches
nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from dropflow.adapters.aws.ec2_compute import Ec2Compute, quota_advice, vcpu_quota, vcpus
from dropflow.control.launcher import Launcher
from dropflow.ports import LaunchError, LaunchRequest
from dropflow.records.jobs import JobState, JobStore
from tests.unit.test_ec2_compute import ListedPrices

TEMPLATE = "lt-0123456789abcdef0"
SUBNETS = ("subnet-aaaa1111", "subnet-bbbb2222")
DEFAULT_TYPES = ("g6.xlarge", "g5.xlarge", "g4dn.xlarge", "g6.2xlarge", "g5.2xlarge")
PRICES = {"g6.xlarge": 0.8048, "g5.xlarge": 1.006, "g4dn.xlarge": 0.526}
PRICES |= {"g6.2xlarge": 0.9776, "g5.2xlarge": 1.212}
CSV = b"a,b,target\n1,2,0\n3,4,1\n"
# What EC2 says, as accounts at a 0 quota have seen it.
SPOT_MESSAGE = "Max spot instance count exceeded"
VCPU_MESSAGE = (
    "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the "
    "instance bucket that the specified instance type belongs to. Please visit "
    "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit."
)
COMMAND = "aws service-quotas request-service-quota-increase --service-code ec2"


def _fleet_errors(code: str, message: str, lifecycle: str, types=DEFAULT_TYPES) -> dict:
    return {
        "FleetId": "fleet-11112222-3333-4444-5555-666677778888",
        "Errors": [
            {
                "LaunchTemplateAndOverrides": {
                    "LaunchTemplateSpecification": {"LaunchTemplateId": TEMPLATE, "Version": "1"},
                    "Overrides": {"InstanceType": t, "SubnetId": s},
                },
                "Lifecycle": lifecycle,
                "ErrorCode": code,
                "ErrorMessage": message,
            }
            for t in types
            for s in SUBNETS
        ],
        "Instances": [],
    }


@pytest.fixture
def ec2() -> Iterator[tuple[Ec2Compute, Stubber]]:
    client = boto3.client(
        "ec2", region_name="eu-west-1", config=Config(retries={"max_attempts": 1})
    )
    compute = Ec2Compute(
        TEMPLATE,
        subnet_ids=SUBNETS,
        instance_types=DEFAULT_TYPES,
        client=client,
        clock=lambda: 1234.0,
        sleep=lambda _: None,
        on_demand_prices=PRICES,
        price_list=ListedPrices(),
    )
    with Stubber(client) as stubber:
        yield compute, stubber
        stubber.assert_no_pending_responses()


def _failed_reason(store, registry, compute: Ec2Compute) -> str:
    store.put("datasets/iris/data.csv", CSV)
    outcome = Launcher(store, registry, compute).request_training("iris")
    assert outcome.action == "failed"
    job = JobStore(registry).get(outcome.job_id)
    assert job.state == JobState.FAILED
    return job.reason or ""


def test_spot_then_on_demand_at_a_zero_quota_name_both_quotas_and_commands(ec2, store, registry):
    compute, stubber = ec2
    spot = _fleet_errors("MaxSpotInstanceCountExceeded", SPOT_MESSAGE, "spot")
    on_demand = _fleet_errors("VcpuLimitExceeded", VCPU_MESSAGE, "on-demand")
    stubber.add_response("create_fleet", spot)
    stubber.add_response("create_fleet", on_demand)

    reason = _failed_reason(store, registry, compute)

    assert 'the EC2 quota "All G and VT Spot Instance Requests" (L-3819A6DF) in eu-west-1' in reason
    assert f"{COMMAND} --quota-code L-3819A6DF --desired-value 4 --region eu-west-1" in reason
    assert (
        'the EC2 quota "Running On-Demand G and VT instances" (L-DB2E81BA) in eu-west-1' in reason
    )
    assert f"{COMMAND} --quota-code L-DB2E81BA --desired-value 4 --region eu-west-1" in reason
    assert "too low for one g6.xlarge" in reason  # the smallest requested type: 4 vCPUs
    # What EC2 said stays in the reason, once per code and message, not once per pool.
    assert reason.count(SPOT_MESSAGE) == 1 and reason.count(VCPU_MESSAGE) == 1
    assert reason.index("L-3819A6DF") < reason.index("L-DB2E81BA")  # spot first, as tried


def test_the_desired_value_is_what_the_smallest_requested_type_needs(ec2, store, registry):
    compute, stubber = ec2
    store.put(
        "datasets/iris/dropflow.yaml",
        b"compute:\n  on_demand: never\n  instance_types: [g6.2xlarge, g5.2xlarge]\n",
    )
    spot = _fleet_errors(
        "MaxSpotInstanceCountExceeded", SPOT_MESSAGE, "spot", types=("g6.2xlarge", "g5.2xlarge")
    )
    stubber.add_response("create_fleet", spot)

    reason = _failed_reason(store, registry, compute)

    assert f"{COMMAND} --quota-code L-3819A6DF --desired-value 8 --region eu-west-1" in reason
    assert "compute.on_demand: never" in reason


def test_a_quota_error_raised_by_create_fleet_names_the_quota_of_the_requested_types(ec2):
    compute, stubber = ec2
    stubber.add_client_error(
        "create_fleet", "VcpuLimitExceeded", VCPU_MESSAGE, http_status_code=400
    )
    request = LaunchRequest(
        job_id="iris-20261123T101500Z-3f9a0c",
        model="iris",
        attempt=1,
        instance_types=("g4dn.xlarge",),
        lifecycle="on-demand",
    )

    with pytest.raises(LaunchError) as caught:
        compute.launch(request)

    assert caught.value.kind == "quota"
    assert f"{COMMAND} --quota-code L-DB2E81BA --desired-value 4" in str(caught.value)


@pytest.mark.parametrize(
    ("instance_type", "lifecycle", "name", "code", "desired"),
    [
        ("g6.xlarge", "spot", "All G and VT Spot Instance Requests", "L-3819A6DF", 4),
        ("vt1.3xlarge", "on-demand", "Running On-Demand G and VT instances", "L-DB2E81BA", 12),
        ("p3.2xlarge", "on-demand", "Running On-Demand P instances", "L-417A185B", 8),
        ("p4d.24xlarge", "spot", "All P4, P3 and P2 Spot Instance Requests", "L-7212CCBC", 96),
        (
            "m5.large",
            "spot",
            "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
            "L-34B43A08",
            2,
        ),
        (
            "c5.xlarge",
            "on-demand",
            "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            "L-1216C47A",
            4,
        ),
    ],
)
def test_each_family_names_its_quota_and_code(instance_type, lifecycle, name, code, desired):
    errors = [{"ErrorCode": "VcpuLimitExceeded", "Lifecycle": lifecycle}]

    advice = quota_advice(errors, lifecycle, [instance_type], "us-west-2")

    assert f'"{name}" ({code}) in us-west-2' in advice
    assert f"--quota-code {code} --desired-value {desired} --region us-west-2" in advice


def test_a_quota_whose_code_is_not_known_is_looked_up_by_name():
    advice = quota_advice(
        [{"ErrorCode": "MaxSpotInstanceCountExceeded"}], "spot", ["p5.48xlarge"], "us-east-1"
    )

    assert '"All P5 Spot Instance Requests"' in advice
    assert "--desired-value 192" in advice
    assert "aws service-quotas list-service-quotas --service-code ec2 --region us-east-1" in advice
    assert "QuotaName=='All P5 Spot Instance Requests'" in advice


def test_a_family_without_a_known_quota_is_still_named():
    advice = quota_advice([{"ErrorCode": "VcpuLimitExceeded"}], "spot", ["inf2.xlarge"], "")

    assert (
        advice
        == "raise the EC2 vCPU quota of inf2.xlarge (spot) (Service Quotas console, Amazon EC2)"
    )
    assert vcpu_quota("inf2.xlarge", "spot") is None
    assert vcpu_quota("trn1.2xlarge", "on-demand") is None  # t... but not Standard


def test_other_quota_codes_give_no_vcpu_advice():
    assert quota_advice([{"ErrorCode": "MaxFleetCountExceeded"}], "spot", ["g6.xlarge"], "") == ""


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("g6.xlarge", 4),
        ("g5.xlarge", 4),
        ("g4dn.xlarge", 4),
        ("g6.2xlarge", 8),
        ("g5.2xlarge", 8),
        ("g4dn.12xlarge", 48),
        ("t3.large", 2),
        ("g4dn.metal", None),
    ],
)
def test_vcpus_are_read_from_the_size(instance_type, expected):
    assert vcpus(instance_type) == expected
