"""Ec2Compute on what moto cannot produce: CreateFleet `Errors`, capacity, quotas, fallback,
prices, and the ClientToken.

Each test scripts the EC2 answers with botocore's Stubber; the port contract under moto is
tests/contract/test_compute.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber

from dropflow import wiring
from dropflow.adapters.aws.ec2_compute import Ec2Compute, classify, client_token, describe_errors
from dropflow.adapters.aws.price_list import PriceListPrices
from dropflow.ports import InstanceState, LaunchError, LaunchRequest
from dropflow.vocabulary.prices import PriceQuote

TEMPLATE = "lt-0123456789abcdef0"
SUBNETS = ("subnet-aaaa1111", "subnet-bbbb2222")
TYPES = ("g6.xlarge", "g5.xlarge")
JOB = "iris-20261123T101500Z-3f9a0c"
INSTANCE = "i-0abc123def4567890"
LAUNCHED = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
# The stack owner's prices of TYPES (USD/hour), as DROPFLOW_ON_DEMAND_PRICES gives them.
OWNER_PRICES = {"g6.xlarge": 0.8048, "g5.xlarge": 1.006}


class ListedPrices:
    """A price source (in place of the Price List API) that records what it is asked."""

    def __init__(self, known: dict[str, float] | None = None, why: str = "no product") -> None:
        self.known, self.why = dict(known or {}), why
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def on_demand_prices(self, region: str, instance_types: Sequence[str]) -> PriceQuote:
        self.asked.append((region, tuple(instance_types)))
        return PriceQuote(
            prices={t: self.known[t] for t in instance_types if t in self.known},
            missing={t: self.why for t in instance_types if t not in self.known},
        )


class Capture:
    """Equal to anything; remembers what it was compared with (a Stubber expected param)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __eq__(self, other: object) -> bool:
        self.seen.append(other)
        return True

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def ec2() -> Iterator[tuple[Ec2Compute, Stubber]]:
    # No retries: a scripted throttling error must reach the adapter as it is.
    client = boto3.client(
        "ec2", region_name="us-east-1", config=Config(retries={"max_attempts": 1})
    )
    compute = Ec2Compute(
        TEMPLATE,
        subnet_ids=SUBNETS,
        instance_types=TYPES,
        client=client,
        clock=lambda: 1234.0,
        sleep=lambda _: None,
        on_demand_prices=OWNER_PRICES,
        price_list=ListedPrices(),
    )
    with Stubber(client) as stubber:
        yield compute, stubber
        stubber.assert_no_pending_responses()


def _request(lifecycle: str = "spot", attempt: int = 1) -> LaunchRequest:
    return LaunchRequest(job_id=JOB, model="iris", attempt=attempt, lifecycle=lifecycle)


def _pool_error(code: str, instance_type: str, subnet: str, lifecycle: str = "spot") -> dict:
    return {
        "LaunchTemplateAndOverrides": {
            "LaunchTemplateSpecification": {"LaunchTemplateId": TEMPLATE, "Version": "1"},
            "Overrides": {"InstanceType": instance_type, "SubnetId": subnet},
        },
        "Lifecycle": lifecycle,
        "ErrorCode": code,
        "ErrorMessage": f"{code} in that pool",
    }


def _every_pool(code: str, lifecycle: str = "spot") -> list[dict]:
    return [_pool_error(code, t, s, lifecycle) for t in TYPES for s in SUBNETS]


def _fleet(errors: list[dict], instance: bool = False, lifecycle: str = "spot") -> dict:
    answer: dict[str, Any] = {"FleetId": "fleet-11112222-3333-4444-5555-666677778888"}
    answer["Errors"] = errors
    if instance:
        answer["Instances"] = [
            {
                "LaunchTemplateAndOverrides": {
                    "LaunchTemplateSpecification": {"LaunchTemplateId": TEMPLATE, "Version": "1"},
                    "Overrides": {"InstanceType": "g5.xlarge", "SubnetId": SUBNETS[1]},
                },
                "Lifecycle": lifecycle,
                "InstanceIds": [INSTANCE],
                "InstanceType": "g5.xlarge",
            }
        ]
    return answer


def _described(
    state: str = "running",
    lifecycle: str = "spot",
    tags: dict[str, str] | None = None,
    reason: str = "",
) -> dict:
    if tags is None:
        tags = {
            "DROPFLOW_JOB_ID": JOB,
            "DROPFLOW_MODEL": "iris",
            "DROPFLOW_ATTEMPT": "1",
            "dropflow:managed": "true",
        }
    raw: dict[str, Any] = {
        "InstanceId": INSTANCE,
        "InstanceType": "g5.xlarge",
        "LaunchTime": LAUNCHED,
        "Placement": {"AvailabilityZone": "us-east-1b"},
        "State": {"Name": state, "Code": 16},
        "StateTransitionReason": reason,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    if lifecycle == "spot":
        raw["InstanceLifecycle"] = "spot"
    return {"Reservations": [{"ReservationId": "r-0123456789abcdef0", "Instances": [raw]}]}


def _expect_fleet(
    compute: Ec2Compute, stubber: Stubber, answer: dict, lifecycle: str = "spot"
) -> None:
    expected = {
        "Type": "instant",
        "ClientToken": compute.fleet_request(_request(lifecycle))["ClientToken"],
        "TargetCapacitySpecification": ANY,
        "LaunchTemplateConfigs": ANY,
        "TagSpecifications": ANY,
    }
    expected["SpotOptions" if lifecycle == "spot" else "OnDemandOptions"] = ANY
    stubber.add_response("create_fleet", answer, expected)


def _expect_describe(stubber: Stubber, answer: dict) -> None:
    stubber.add_response("describe_instances", answer, {"InstanceIds": [INSTANCE]})


# --------------------------------------------------------------------------- the request
def test_fleet_request_spreads_over_every_type_and_subnet(ec2) -> None:
    compute, _ = ec2

    params = compute.fleet_request(_request())

    assert params["Type"] == "instant"
    assert params["TargetCapacitySpecification"]["TotalTargetCapacity"] == 1
    assert params["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "spot"
    assert params["SpotOptions"] == {"AllocationStrategy": "price-capacity-optimized"}
    (config,) = params["LaunchTemplateConfigs"]
    assert config["LaunchTemplateSpecification"] == {
        "LaunchTemplateId": TEMPLATE,
        "Version": "$Latest",
    }
    pools = {(o["InstanceType"], o["SubnetId"]) for o in config["Overrides"]}
    assert pools == {(t, s) for t in TYPES for s in SUBNETS}
    for spec in params["TagSpecifications"]:
        tags = {t["Key"]: t["Value"] for t in spec["Tags"]}
        assert tags == {
            "DROPFLOW_JOB_ID": JOB,
            "DROPFLOW_MODEL": "iris",
            "DROPFLOW_ATTEMPT": "1",
            "dropflow:managed": "true",
        }
    assert {s["ResourceType"] for s in params["TagSpecifications"]} == {"instance", "volume"}


def test_request_instance_types_replace_the_defaults_and_on_demand_has_no_spot_options(
    ec2,
) -> None:
    compute, _ = ec2
    request = LaunchRequest(
        job_id=JOB, model="iris", attempt=1, instance_types=("g4dn.xlarge",), lifecycle="on-demand"
    )

    params = compute.fleet_request(request)

    assert {o["InstanceType"] for o in params["LaunchTemplateConfigs"][0]["Overrides"]} == {
        "g4dn.xlarge"
    }
    assert params["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "on-demand"
    assert "SpotOptions" not in params


def test_a_request_for_a_type_outside_the_allowlist_launches_nothing(ec2) -> None:
    compute, _ = ec2  # no CreateFleet answer is stubbed: none may be asked for
    request = LaunchRequest(
        job_id=JOB, model="iris", attempt=1, instance_types=("g5.xlarge", "p5.48xlarge")
    )

    with pytest.raises(LaunchError) as caught:
        compute.launch(request)

    assert caught.value.kind == "config"
    assert str(caught.value) == (
        f"job {JOB} attempt 1 (spot): p5.48xlarge not launched: not among the allowed "
        "instance types (g6.xlarge, g5.xlarge; TrainingInstanceTypes "
        "(DROPFLOW_TRAINING_INSTANCE_TYPES))"
    )


def test_the_client_token_is_the_same_for_the_same_request(ec2) -> None:
    compute, _ = ec2
    # Another Lambda (another adapter), the same launch.
    other = Ec2Compute(TEMPLATE, subnet_ids=SUBNETS, instance_types=TYPES, client=object())

    token = compute.fleet_request(_request())["ClientToken"]

    assert token == other.fleet_request(_request())["ClientToken"]
    assert token.startswith("dropflow-") and len(token) <= 64


@pytest.mark.parametrize(
    "change",
    [
        {"attempt": 2},
        {"lifecycle": "on-demand"},
        {"instance_types": ("g6.xlarge",)},
    ],
)
def test_a_request_that_differs_in_anything_gets_another_token(ec2, change) -> None:
    compute, _ = ec2
    changed = LaunchRequest(**{"job_id": JOB, "model": "iris", "attempt": 1, **change})

    token = compute.fleet_request(_request())["ClientToken"]

    assert compute.fleet_request(changed)["ClientToken"] != token


def test_other_subnets_or_tags_change_the_token_too(ec2) -> None:
    compute, _ = ec2
    moved = Ec2Compute(TEMPLATE, subnet_ids=SUBNETS[:1], instance_types=TYPES, client=object())
    tagged = Ec2Compute(
        TEMPLATE, subnet_ids=SUBNETS, instance_types=TYPES, client=object(), tags={"a": "b"}
    )

    tokens = {c.fleet_request(_request())["ClientToken"] for c in (compute, moved, tagged)}

    assert len(tokens) == 3


def test_the_token_is_a_hash_of_the_request_without_its_token() -> None:
    params = {"Type": "instant", "Overrides": ["x" * 500]}

    assert client_token(params) == client_token({**params, "ClientToken": "anything"})
    assert client_token(params) != client_token(params, salt="retry")
    assert len(client_token(params)) <= 64


# --------------------------------------------------------------------------- launch
def test_every_pool_out_of_capacity_is_a_capacity_error_naming_the_pools(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet(_every_pool("InsufficientInstanceCapacity")))

    with pytest.raises(LaunchError) as caught:
        compute.launch(_request())

    assert caught.value.kind == "capacity"
    message = str(caught.value)
    pools = ", ".join(f"{t}/{s}" for t in TYPES for s in SUBNETS)
    assert f"{pools} spot: InsufficientInstanceCapacity" in message


def test_pool_errors_with_the_same_code_and_message_are_told_once() -> None:
    errors = [_pool_error("InsufficientInstanceCapacity", t, SUBNETS[0]) for t in TYPES]
    errors.append(_pool_error("Unsupported", "g5.xlarge", SUBNETS[1]))

    told = describe_errors(errors)

    assert told.count("InsufficientInstanceCapacity (") == 1
    assert f"g6.xlarge/{SUBNETS[0]}, g5.xlarge/{SUBNETS[0]} spot: Insuff" in told
    assert f"g5.xlarge/{SUBNETS[1]} spot: Unsupported (Unsupported in that pool)" in told


def test_partial_errors_with_one_instance_is_a_launch(ec2) -> None:
    compute, stubber = ec2
    errors = [_pool_error("InsufficientInstanceCapacity", "g6.xlarge", s) for s in SUBNETS]
    _expect_fleet(compute, stubber, _fleet(errors, instance=True))
    _expect_describe(stubber, _described("pending"))
    _expect_spot_price(stubber, {"SpotPriceHistory": []})

    inst = compute.launch(_request())

    assert inst.instance_id == INSTANCE
    assert (inst.job_id, inst.attempt, inst.state) == (JOB, 1, InstanceState.PENDING)
    assert (inst.instance_type, inst.zone, inst.lifecycle) == ("g5.xlarge", "us-east-1b", "spot")
    assert inst.launched_at == LAUNCHED.timestamp()


def test_instance_not_yet_visible_is_reported_from_the_fleet_answer(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet([], instance=True))
    for _ in range(4):  # DescribeInstances lags behind CreateFleet
        stubber.add_client_error("describe_instances", "InvalidInstanceID.NotFound")
    _expect_spot_price(stubber, {"SpotPriceHistory": []}, zone=None)

    inst = compute.launch(_request())

    assert (inst.instance_id, inst.state, inst.instance_type) == (
        INSTANCE,
        InstanceState.PENDING,
        "g5.xlarge",
    )
    assert inst.launched_at == 1234.0


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("MaxSpotInstanceCountExceeded", "quota"),
        ("VcpuLimitExceeded", "quota"),
        ("SpotMaxPriceTooLow", "price"),
        ("UnfulfillableCapacity", "capacity"),
        ("InsufficientFreeAddressesInSubnet", "capacity"),
        ("InvalidLaunchTemplateId.NotFound", "config"),
    ],
)
def test_pool_errors_are_classified(ec2, code: str, kind: str) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet(_every_pool(code)))

    with pytest.raises(LaunchError) as caught:
        compute.launch(_request())

    assert caught.value.kind == kind
    assert code in str(caught.value)


def test_capacity_in_one_pool_outranks_a_setting_error_in_another(ec2) -> None:
    compute, stubber = ec2
    errors = [
        _pool_error("InvalidParameterValue", "g6.xlarge", SUBNETS[0]),
        _pool_error("InsufficientInstanceCapacity", "g5.xlarge", SUBNETS[1]),
    ]
    _expect_fleet(compute, stubber, _fleet(errors))

    with pytest.raises(LaunchError) as caught:
        compute.launch(_request())

    assert caught.value.kind == "capacity"


@pytest.mark.parametrize(
    ("code", "kind"),
    [("RequestLimitExceeded", "transient"), ("UnauthorizedOperation", "config")],
)
def test_create_fleet_exceptions_are_classified(ec2, code: str, kind: str) -> None:
    compute, stubber = ec2
    stubber.add_client_error("create_fleet", code, "no")

    with pytest.raises(LaunchError) as caught:
        compute.launch(_request())

    assert caught.value.kind == kind
    assert code in str(caught.value)


def test_classify_defaults_to_config() -> None:
    assert classify("SomethingNew") == "config"


# --------------------------------------------------------------------------- launch_any
def test_launch_any_falls_back_to_on_demand_after_spot_capacity_errors(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet(_every_pool("InsufficientInstanceCapacity")))
    _expect_fleet(compute, stubber, _fleet([], instance=True, lifecycle="on-demand"), "on-demand")
    _expect_describe(stubber, _described("pending", lifecycle="on-demand"))

    inst = compute.launch_any(_request(), allow_on_demand=True)

    assert (inst.instance_id, inst.lifecycle) == (INSTANCE, "on-demand")


def test_launch_any_falls_back_after_a_spot_quota_error(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet(_every_pool("MaxSpotInstanceCountExceeded")))
    _expect_fleet(compute, stubber, _fleet([], instance=True, lifecycle="on-demand"), "on-demand")
    _expect_describe(stubber, _described("pending", lifecycle="on-demand"))

    assert compute.launch_any(_request(), allow_on_demand=True).lifecycle == "on-demand"


def test_launch_any_without_on_demand_fails_with_the_reason(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet(_every_pool("InsufficientInstanceCapacity")))

    with pytest.raises(LaunchError) as caught:
        compute.launch_any(_request(), allow_on_demand=False)

    assert caught.value.kind == "capacity"
    assert "InsufficientInstanceCapacity" in str(caught.value)
    assert "the spec does not allow on-demand" in str(caught.value)


def test_launch_any_does_not_fall_back_on_a_config_error(ec2) -> None:
    compute, stubber = ec2
    stubber.add_client_error("create_fleet", "InvalidLaunchTemplateId.NotFound", "gone")

    with pytest.raises(LaunchError) as caught:
        compute.launch_any(_request(), allow_on_demand=True)

    assert caught.value.kind == "config"
    assert "on-demand not tried" in str(caught.value)


def test_launch_any_lists_every_attempt_when_both_fail(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet(_every_pool("InsufficientInstanceCapacity")))
    _expect_fleet(
        compute,
        stubber,
        _fleet(_every_pool("InsufficientInstanceCapacity", "on-demand")),
        "on-demand",
    )

    with pytest.raises(LaunchError) as caught:
        compute.launch_any(_request(), allow_on_demand=True)

    message = str(caught.value)
    assert "(spot)" in message and "(on-demand)" in message
    assert "g5.xlarge/subnet-bbbb2222 on-demand: InsufficientInstanceCapacity" in message
    assert caught.value.kind == "capacity"


# --------------------------------------------------------------------------- describe
def test_describe_maps_states_and_reads_the_end_time(ec2) -> None:
    compute, stubber = ec2
    _expect_describe(
        stubber,
        _described("stopping", reason="User initiated (2026-11-23 11:00:00 GMT)"),
    )

    inst = compute.describe(INSTANCE)

    assert inst is not None and inst.state == InstanceState.TERMINATED
    assert inst.ended_at == datetime(2026, 11, 23, 11, 0, tzinfo=UTC).timestamp()
    assert inst.exit_code is None


def test_an_instance_without_dropflow_tags_is_not_ours(ec2) -> None:
    compute, stubber = ec2
    _expect_describe(stubber, _described(tags={"Name": "someone else's"}))
    _expect_describe(stubber, _described(tags={"Name": "someone else's"}))

    assert compute.describe(INSTANCE) is None
    compute.terminate(INSTANCE)  # described, found foreign, left alone (no TerminateInstances)


def test_terminate_a_running_instance_and_an_unknown_one(ec2) -> None:
    compute, stubber = ec2
    _expect_describe(stubber, _described("running"))
    stubber.add_response(
        "terminate_instances",
        {"TerminatingInstances": [{"InstanceId": INSTANCE}]},
        {"InstanceIds": [INSTANCE]},
    )
    stubber.add_client_error("describe_instances", "InvalidInstanceID.NotFound")

    compute.terminate(INSTANCE)
    compute.terminate(INSTANCE)  # now unknown: fine


# --------------------------------------------------------------------------- wiring
def test_open_compute_builds_an_ec2_compute_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dropflow.wiring import open_compute

    monkeypatch.setenv("DROPFLOW_TRAINING_SUBNET_IDS", "subnet-1, subnet-2,")
    monkeypatch.setenv("DROPFLOW_TRAINING_INSTANCE_TYPES", "g5.xlarge,g6.xlarge")
    monkeypatch.setenv("DROPFLOW_STACK_NAME", "dropflow-prod")
    open_compute.cache_clear()
    try:
        compute = open_compute("ec2://lt-0fedcba9876543210")
    finally:
        open_compute.cache_clear()

    assert isinstance(compute, Ec2Compute)
    assert compute.launch_template_id == "lt-0fedcba9876543210"
    assert compute.subnet_ids == ("subnet-1", "subnet-2")
    assert compute.instance_types == ("g5.xlarge", "g6.xlarge")
    assert compute.tags == {"dropflow:stack": "dropflow-prod"}


# --------------------------------------------------------------------------- prices
def _spot_history(*entries: tuple[str, str, datetime]) -> dict:
    return {
        "SpotPriceHistory": [
            {
                "AvailabilityZone": zone,
                "InstanceType": "g5.xlarge",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": price,
                "Timestamp": when,
            }
            for zone, price, when in entries
        ]
    }


def _expect_spot_price(stubber: Stubber, answer: dict, zone: str | None = "us-east-1b") -> None:
    expected = {
        "InstanceTypes": ["g5.xlarge"],
        "ProductDescriptions": ANY,
        "StartTime": ANY,
    }
    if zone:
        expected["AvailabilityZone"] = zone
    stubber.add_response("describe_spot_price_history", answer, expected)


def test_a_spot_launch_records_the_newest_spot_price_of_its_zone(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet([], instance=True))
    _expect_describe(stubber, _described("pending"))
    earlier, later = datetime(2026, 11, 23, 9, tzinfo=UTC), datetime(2026, 11, 23, 10, tzinfo=UTC)
    _expect_spot_price(
        stubber, _spot_history(("us-east-1b", "0.3500", earlier), ("us-east-1b", "0.3712", later))
    )

    inst = compute.launch(_request())

    assert inst.price_per_hour == pytest.approx(0.3712)
    assert inst.on_demand_price_per_hour == pytest.approx(1.006)  # g5.xlarge, us-east-1 list


def test_a_spot_price_ec2_cannot_give_is_unknown_and_the_launch_still_succeeds(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet([], instance=True))
    _expect_describe(stubber, _described("pending"))
    stubber.add_client_error("describe_spot_price_history", "UnauthorizedOperation", "denied")

    inst = compute.launch(_request())

    assert inst.instance_id == INSTANCE
    assert inst.price_per_hour is None
    assert inst.on_demand_price_per_hour == pytest.approx(1.006)


def test_an_empty_price_history_leaves_the_spot_price_unknown(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet([], instance=True))
    _expect_describe(stubber, _described("pending"))
    _expect_spot_price(stubber, {"SpotPriceHistory": []})

    assert compute.launch(_request()).price_per_hour is None


def test_without_a_zone_the_highest_zone_price_is_recorded(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet([], instance=True))
    for _ in range(4):  # not visible yet: the zone is unknown
        stubber.add_client_error("describe_instances", "InvalidInstanceID.NotFound")
    now = datetime(2026, 11, 23, 10, tzinfo=UTC)
    _expect_spot_price(
        stubber, _spot_history(("us-east-1a", "0.33", now), ("us-east-1c", "0.41", now)), zone=None
    )

    assert compute.launch(_request()).price_per_hour == pytest.approx(0.41)


def test_an_on_demand_launch_records_the_on_demand_price(ec2) -> None:
    compute, stubber = ec2
    _expect_fleet(compute, stubber, _fleet([], instance=True, lifecycle="on-demand"), "on-demand")
    _expect_describe(stubber, _described("pending", lifecycle="on-demand"))

    inst = compute.launch(_request("on-demand"))

    assert inst.price_per_hour == inst.on_demand_price_per_hour == pytest.approx(1.006)


def test_on_demand_prices_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPFLOW_ON_DEMAND_PRICES", '{"g5.xlarge": 1.25}')
    monkeypatch.setenv("DROPFLOW_TRAINING_SUBNET_IDS", "subnet-1")
    wiring.open_compute.cache_clear()

    assert wiring.open_compute(f"ec2://{TEMPLATE}").on_demand_prices == {"g5.xlarge": 1.25}
    assert Ec2Compute(TEMPLATE, client=object()).on_demand_prices == {}


def test_the_wiring_prices_with_the_owner_first_then_the_price_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DROPFLOW_ON_DEMAND_PRICES", '{"g5.xlarge": 1.25}')
    monkeypatch.setenv("DROPFLOW_PRICE_LIST_TTL_SECONDS", "900")
    wiring.open_compute.cache_clear()
    try:
        compute = wiring.open_compute(f"ec2://{TEMPLATE}")
    finally:
        wiring.open_compute.cache_clear()

    assert isinstance(compute.price_list, PriceListPrices)
    assert compute.price_list.ttl_seconds == 900.0
    assert compute.prices.owner == {"g5.xlarge": 1.25}


# --------------------------------------------------------------------------- unpriced types
def _priced_by(known: dict[str, float], owner: dict[str, float] | None = None):
    client = boto3.client(
        "ec2", region_name="eu-west-1", config=Config(retries={"max_attempts": 1})
    )
    source = ListedPrices(known, why="the Price List API has no product for it")
    compute = Ec2Compute(
        TEMPLATE,
        subnet_ids=SUBNETS[:1],
        instance_types=("g6.xlarge", "x9.huge"),
        client=client,
        clock=lambda: 1234.0,
        sleep=lambda _: None,
        on_demand_prices=owner,
        price_list=source,
    )
    return compute, source, Stubber(client)


def test_a_type_nobody_can_price_is_refused_naming_it_and_how_to_price_it() -> None:
    compute, source, stubber = _priced_by({})

    with stubber, pytest.raises(LaunchError) as caught:
        compute.launch(_request())  # no CreateFleet call is stubbed: none may be made

    assert caught.value.kind == "config"
    message = str(caught.value)
    assert "no on-demand price in eu-west-1 for g6.xlarge, x9.huge" in message
    assert "the Price List API has no product for it" in message
    assert "TrainingOnDemandPrices" in message and "DROPFLOW_ON_DEMAND_PRICES" in message
    assert source.asked == [("eu-west-1", ("g6.xlarge", "x9.huge"))]  # the client's region


def test_only_priced_types_reach_create_fleet_and_the_failure_names_the_others() -> None:
    compute, _, stubber = _priced_by({"g6.xlarge": 1.1})
    seen = Capture()
    errors = [_pool_error("InsufficientInstanceCapacity", "g6.xlarge", SUBNETS[0])]
    stubber.add_response(
        "create_fleet",
        _fleet(errors),
        {
            "Type": "instant",
            "ClientToken": ANY,
            "TargetCapacitySpecification": ANY,
            "LaunchTemplateConfigs": seen,
            "TagSpecifications": ANY,
            "SpotOptions": ANY,
        },
    )

    with stubber, pytest.raises(LaunchError) as caught:
        compute.launch(_request())

    (config,) = seen.seen[0]
    assert [o["InstanceType"] for o in config["Overrides"]] == ["g6.xlarge"]
    assert "not tried, no on-demand price: x9.huge" in str(caught.value)


def test_the_owners_price_is_recorded_over_the_price_lists() -> None:
    compute, source, stubber = _priced_by({"g6.xlarge": 1.1}, owner={"g6.xlarge": 0.9})
    answer = _fleet([], instance=True, lifecycle="on-demand")
    answer["Instances"][0]["InstanceType"] = "g6.xlarge"
    stubber.add_response("create_fleet", answer)
    for _ in range(4):  # not visible yet: the answer's type is what is priced
        stubber.add_client_error("describe_instances", "InvalidInstanceID.NotFound")

    with stubber:
        inst = compute.launch(_request("on-demand"))

    assert inst.instance_type == "g6.xlarge"
    assert inst.price_per_hour == inst.on_demand_price_per_hour == 0.9
    assert source.asked == [("eu-west-1", ("x9.huge",))]


# --------------------------------------------------------------------------- token mismatch
def _mismatch(stubber: Stubber) -> None:
    stubber.add_client_error(
        "create_fleet",
        "IdempotentParameterMismatch",
        "The request uses the same client token as a previous, but non-identical request.",
        http_status_code=400,
    )


def _attempt_search(stubber: Stubber, reservations: list[dict]) -> None:
    stubber.add_response(
        "describe_instances",
        {"Reservations": reservations},
        {
            "Filters": [
                {"Name": "tag:DROPFLOW_JOB_ID", "Values": [JOB]},
                {"Name": "tag:DROPFLOW_ATTEMPT", "Values": ["1"]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        },
    )


def test_a_token_mismatch_is_retried_once_under_a_fresh_token(ec2, caplog) -> None:
    compute, stubber = ec2
    first = compute.fleet_request(_request())["ClientToken"]
    _mismatch(stubber)
    _attempt_search(stubber, [])  # no instance of this attempt exists
    token = Capture()
    stubber.add_response(
        "create_fleet",
        _fleet([], instance=True),
        {
            "Type": "instant",
            "ClientToken": token,
            "TargetCapacitySpecification": ANY,
            "LaunchTemplateConfigs": ANY,
            "TagSpecifications": ANY,
            "SpotOptions": ANY,
        },
    )
    _expect_describe(stubber, _described("pending"))
    _expect_spot_price(stubber, {"SpotPriceHistory": []})

    inst = compute.launch(_request())

    assert inst.instance_id == INSTANCE
    assert token.seen[0] != first and token.seen[0].startswith("dropflow-")
    assert "IdempotentParameterMismatch" in caplog.text


def test_a_token_mismatch_returns_the_instance_this_attempt_already_has(ec2) -> None:
    compute, stubber = ec2
    _mismatch(stubber)
    _attempt_search(stubber, _described("running")["Reservations"])
    _expect_spot_price(stubber, {"SpotPriceHistory": []})

    inst = compute.launch(_request())  # no second CreateFleet: no second instance

    assert (inst.instance_id, inst.job_id, inst.attempt) == (INSTANCE, JOB, 1)
    assert inst.on_demand_price_per_hour == OWNER_PRICES["g5.xlarge"]


def test_a_second_token_mismatch_is_a_transient_error_not_a_config_one(ec2) -> None:
    compute, stubber = ec2
    _mismatch(stubber)
    _attempt_search(stubber, [])
    _mismatch(stubber)

    with pytest.raises(LaunchError) as caught:
        compute.launch(_request())

    assert caught.value.kind == "transient"
    assert "IdempotentParameterMismatch" in str(caught.value)
    assert "fresh ClientToken" in str(caught.value)
    assert classify("IdempotentParameterMismatch") == "transient"
