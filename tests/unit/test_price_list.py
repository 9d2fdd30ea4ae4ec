"""PriceListPrices against GetProducts answers shaped as the Price List Query API sends them.

Each test scripts the `pricing` client with botocore's Stubber (moto has no Price List API):
PriceList is a list of JSON strings, each one product with its terms.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from botocore.stub import ANY, Stubber

from dropflow.adapters.aws.ec2_compute import Ec2Compute
from dropflow.adapters.aws.price_list import (
    ENDPOINT_REGION,
    PriceListPrices,
    hourly_usd,
    product_filters,
)
from dropflow.ports import LaunchRequest


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pricing() -> Iterator[tuple[PriceListPrices, Stubber, Clock]]:
    client = boto3.client(
        "pricing", region_name=ENDPOINT_REGION, config=Config(retries={"max_attempts": 1})
    )
    clock = Clock()
    with Stubber(client) as stubber:
        yield PriceListPrices(client=client, ttl_seconds=3600, clock=clock), stubber, clock
        stubber.assert_no_pending_responses()


def _product(instance_type: str, region: str, usd: str) -> str:
    """One PriceList item: a Linux on-demand EC2 product and its OnDemand term."""
    sku, term = "9ZNQ7XQ4N2ZJ6Q8P", "JRTCKXETXF"
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "instanceType": instance_type,
                    "regionCode": region,
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                    "preInstalledSw": "NA",
                    "capacitystatus": "Used",
                    "licenseModel": "No License required",
                    "vcpu": "4",
                    "servicecode": "AmazonEC2",
                },
                "sku": sku,
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    f"{sku}.{term}": {
                        "priceDimensions": {
                            f"{sku}.{term}.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": f"${usd} per On Demand Linux {instance_type} "
                                "Instance Hour",
                                "appliesTo": [],
                                "rateCode": f"{sku}.{term}.6YS6EN2CT7",
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2026-11-01T00:00:00Z",
                        "offerTermCode": term,
                        "termAttributes": {},
                    }
                }
            },
            "version": "20261101000000",
            "publicationDate": "2026-11-01T00:00:00Z",
        }
    )


def _expect(stubber: Stubber, region: str, instance_type: str, items: list[str]) -> None:
    stubber.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": items},  # no NextToken: the last page
        {
            "ServiceCode": "AmazonEC2",
            "Filters": product_filters(region, instance_type),
            "FormatVersion": "aws_v1",
            "MaxResults": 10,
        },
    )


def test_the_filters_name_the_region_and_the_linux_on_demand_product() -> None:
    filters = {f["Field"]: f["Value"] for f in product_filters("eu-west-1", "g6.xlarge")}

    assert filters == {
        "regionCode": "eu-west-1",
        "instanceType": "g6.xlarge",
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }
    assert {f["Type"] for f in product_filters("eu-west-1", "g6.xlarge")} == {"TERM_MATCH"}


def test_a_type_is_priced_from_its_product_in_the_stacks_region(pricing) -> None:
    prices, stubber, _ = pricing
    _expect(stubber, "eu-west-1", "g6.xlarge", [_product("g6.xlarge", "eu-west-1", "0.8960")])

    quote = prices.on_demand_prices("eu-west-1", ["g6.xlarge"])

    assert quote.prices == {"g6.xlarge": pytest.approx(0.896)}
    assert quote.missing == {}


def test_a_price_is_asked_once_per_process_until_it_ages_out(pricing) -> None:
    prices, stubber, clock = pricing
    _expect(stubber, "eu-west-1", "g6.xlarge", [_product("g6.xlarge", "eu-west-1", "0.8960")])
    prices.on_demand_prices("eu-west-1", ["g6.xlarge"])

    clock.now += 3599  # a second ask within the lifetime: no call (none is stubbed)
    assert prices.on_demand_prices("eu-west-1", ["g6.xlarge"]).prices["g6.xlarge"] == 0.896

    clock.now += 2
    _expect(stubber, "eu-west-1", "g6.xlarge", [_product("g6.xlarge", "eu-west-1", "0.9100")])
    assert prices.on_demand_prices("eu-west-1", ["g6.xlarge"]).prices["g6.xlarge"] == 0.91


def test_the_cache_is_per_region(pricing) -> None:
    prices, stubber, _ = pricing
    _expect(stubber, "us-east-1", "g6.xlarge", [_product("g6.xlarge", "us-east-1", "0.8048")])
    _expect(stubber, "eu-west-1", "g6.xlarge", [_product("g6.xlarge", "eu-west-1", "0.8960")])

    assert prices.on_demand_prices("us-east-1", ["g6.xlarge"]).prices["g6.xlarge"] == 0.8048
    assert prices.on_demand_prices("eu-west-1", ["g6.xlarge"]).prices["g6.xlarge"] == 0.896


def test_a_type_without_a_product_is_missing_not_zero(pricing) -> None:
    prices, stubber, _ = pricing
    _expect(stubber, "eu-west-1", "g7.xlarge", [])

    quote = prices.on_demand_prices("eu-west-1", ["g7.xlarge"])

    assert quote.prices == {}
    assert quote.missing["g7.xlarge"] == (
        "the Price List API has no Linux on-demand product for g7.xlarge in eu-west-1"
    )


def test_a_zero_price_is_not_taken_for_an_on_demand_price(pricing) -> None:
    prices, stubber, _ = pricing
    _expect(stubber, "eu-west-1", "g6.xlarge", [_product("g6.xlarge", "eu-west-1", "0.0000")])

    quote = prices.on_demand_prices("eu-west-1", ["g6.xlarge"])

    assert "g6.xlarge" not in quote.prices
    assert "not an on-demand price" in quote.missing["g6.xlarge"]


def test_access_denied_leaves_every_type_unpriced_with_the_error_and_asks_once(pricing) -> None:
    prices, stubber, _ = pricing
    stubber.add_client_error(
        "get_products",
        service_error_code="AccessDeniedException",
        service_message="User: arn:aws:sts::123456789012:assumed-role/launch is not authorized "
        "to perform: pricing:GetProducts",
        http_status_code=400,
    )

    quote = prices.on_demand_prices("eu-west-1", ["g6.xlarge", "g5.xlarge"])

    assert quote.prices == {}
    for instance_type in ("g6.xlarge", "g5.xlarge"):
        assert quote.missing[instance_type].startswith(
            "the Price List API failed: AccessDeniedException: User: "
        )
        assert "pricing:GetProducts" in quote.missing[instance_type]


def test_a_failure_is_not_cached_the_next_launch_asks_again(pricing) -> None:
    prices, stubber, _ = pricing
    stubber.add_client_error(
        "get_products", "ThrottlingException", "Rate exceeded", http_status_code=400
    )
    _expect(stubber, "eu-west-1", "g6.xlarge", [_product("g6.xlarge", "eu-west-1", "0.8960")])

    first = prices.on_demand_prices("eu-west-1", ["g6.xlarge"])
    second = prices.on_demand_prices("eu-west-1", ["g6.xlarge"])

    assert "ThrottlingException: Rate exceeded" in first.missing["g6.xlarge"]
    assert second.prices == {"g6.xlarge": 0.896}


def test_a_next_token_is_followed_to_the_product() -> None:
    client = boto3.client("pricing", region_name=ENDPOINT_REGION)
    prices = PriceListPrices(client=client)
    with Stubber(client) as stubber:
        stubber.add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": [], "NextToken": "page-2"},
        )
        stubber.add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": [_product("g6.xlarge", "us-east-1", "0.8")]},
            {
                "ServiceCode": "AmazonEC2",
                "Filters": product_filters("us-east-1", "g6.xlarge"),
                "FormatVersion": "aws_v1",
                "MaxResults": 10,
                "NextToken": "page-2",
            },
        )

        assert prices.on_demand_prices("us-east-1", ["g6.xlarge"]).prices == {"g6.xlarge": 0.8}


class Unreachable:
    """A pricing client with no network (a function without a route to the endpoint)."""

    def get_products(self, **_: object) -> dict:
        raise EndpointConnectionError(endpoint_url="https://api.pricing.us-east-1.amazonaws.com/")


def test_no_network_leaves_the_types_unpriced_with_the_error() -> None:
    quote = PriceListPrices(client=Unreachable()).on_demand_prices("us-east-1", ["g6.xlarge"])

    assert quote.prices == {}
    assert "Could not connect to the endpoint URL" in quote.missing["g6.xlarge"]


def test_a_region_outside_the_aws_partition_is_not_asked() -> None:
    quote = PriceListPrices(client=Unreachable()).on_demand_prices("cn-north-1", ["g4dn.xlarge"])

    assert "does not price cn-north-1 in USD" in quote.missing["g4dn.xlarge"]


def test_several_prices_give_the_highest_so_a_budget_is_not_underestimated() -> None:
    items = [_product("g6.xlarge", "us-east-1", "0.80"), _product("g6.xlarge", "us-east-1", "0.9")]

    assert hourly_usd(items) == 0.9
    assert hourly_usd(["not json", json.dumps({"terms": {}})]) is None


def test_the_client_asks_the_us_east_1_endpoint_by_default() -> None:
    assert PriceListPrices().client.meta.region_name == "us-east-1"


# --------------------------------------------------------------------------- with the EC2 adapter
def test_a_launch_prices_its_types_in_the_ec2_region_the_owners_price_first() -> None:
    ec2 = boto3.client("ec2", region_name="eu-west-1", config=Config(retries={"max_attempts": 1}))
    pricing = boto3.client("pricing", region_name=ENDPOINT_REGION)
    compute = Ec2Compute(
        "lt-0123456789abcdef0",
        subnet_ids=("subnet-aaaa1111",),
        instance_types=("g6.xlarge", "g5.xlarge"),
        client=ec2,
        clock=lambda: 1234.0,
        sleep=lambda _: None,
        on_demand_prices={"g5.xlarge": 1.5},  # the owner's: the Price List is not asked
        price_list=PriceListPrices(client=pricing),
    )
    instance = {
        "LaunchTemplateAndOverrides": {
            "LaunchTemplateSpecification": {"LaunchTemplateId": "lt-0123456789abcdef0"},
            "Overrides": {"InstanceType": "g6.xlarge", "SubnetId": "subnet-aaaa1111"},
        },
        "Lifecycle": "on-demand",
        "InstanceIds": ["i-0abc123def4567890"],
        "InstanceType": "g6.xlarge",
    }
    with Stubber(ec2) as ec2_stub, Stubber(pricing) as pricing_stub:
        _expect(
            pricing_stub, "eu-west-1", "g6.xlarge", [_product("g6.xlarge", "eu-west-1", "0.896")]
        )
        ec2_stub.add_response(
            "create_fleet",
            {"FleetId": "fleet-1", "Instances": [instance]},
            {
                "Type": "instant",
                "ClientToken": ANY,
                "TargetCapacitySpecification": ANY,
                "LaunchTemplateConfigs": [
                    {
                        "LaunchTemplateSpecification": ANY,
                        "Overrides": [
                            {"InstanceType": "g6.xlarge", "SubnetId": "subnet-aaaa1111"},
                            {"InstanceType": "g5.xlarge", "SubnetId": "subnet-aaaa1111"},
                        ],
                    }
                ],
                "TagSpecifications": ANY,
                "OnDemandOptions": ANY,
            },
        )
        for _ in range(4):  # not visible yet: the fleet's answer is recorded
            ec2_stub.add_client_error("describe_instances", "InvalidInstanceID.NotFound")

        launched = compute.launch(
            LaunchRequest(
                job_id="iris-20261123T101500Z-3f9a0c",
                model="iris",
                attempt=1,
                lifecycle="on-demand",
            )
        )

        pricing_stub.assert_no_pending_responses()
    assert launched.instance_type == "g6.xlarge"
    assert launched.price_per_hour == launched.on_demand_price_per_hour == 0.896
