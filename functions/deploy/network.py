"""Refuse, at deploy, subnets from which the stack's parts could not reach what they call.

Custom::SubnetReach, properties Parameter (the stack parameter named in the message), Subnets,
Services (short names: s3, dynamodb, ecr.api, ecr.dkr, logs) and PublicIp ("true" where an
instance launched in the subnet may use an internet gateway: the training instances get a
public IP when the subnet assigns one; the predict function's network interfaces never do).

Without this check a subnet with no route to DynamoDB deploys cleanly and fails later, where it
costs most: every prediction hangs until its timeout (API Gateway answers 5xx), a serving
instance never pulls its image, a training instance pays for itself until its deadline.

A subnet reaches a service through, in this order ("Gateway endpoints",
https://docs.aws.amazon.com/vpc/latest/privatelink/gateway-endpoints.html; "Access an AWS
service using an interface VPC endpoint",
https://docs.aws.amazon.com/vpc/latest/privatelink/create-interface-endpoint.html):
- a gateway endpoint's route in its route table (S3, DynamoDB: the route's destination is the
  service's AWS-managed prefix list);
- an interface endpoint of the service in its VPC with private DNS on (any service);
- an active default route (0.0.0.0/0) to a NAT gateway, a transit gateway, a Cloud WAN core
  network, a virtual private gateway, a network interface or an instance (egress the check
  cannot see past, so it trusts it), or to an internet gateway when PublicIp is "true" and the
  subnet assigns public IPs. A peering connection never counts: a peered VPC's NAT gateway or
  internet gateway does not carry another VPC's traffic.
A subnet with no route table of its own uses its VPC's main route table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import boto3
from botocore.exceptions import ClientError
from custom_resource import Answer, Request, StepRefused, handler_for

GATEWAY_SERVICES = ("s3", "dynamodb")
_EGRESS_TARGETS = (
    "NatGatewayId",
    "TransitGatewayId",
    "CoreNetworkArn",
    "NetworkInterfaceId",
    "InstanceId",
)


def route_table_of(ec2: Any, subnet: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The subnet's own route table, else its VPC's main one (None: neither exists)."""
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "association.subnet-id", "Values": [subnet["SubnetId"]]}]
    )["RouteTables"]
    if not tables:
        tables = ec2.describe_route_tables(
            Filters=[
                {"Name": "vpc-id", "Values": [subnet["VpcId"]]},
                {"Name": "association.main", "Values": ["true"]},
            ]
        )["RouteTables"]
    return tables[0] if tables else None


def interface_services(ec2: Any, vpc_id: str, region: str) -> set[str]:
    """Short names of the services with an available interface endpoint, private DNS on."""
    pages = ec2.get_paginator("describe_vpc_endpoints").paginate(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "vpc-endpoint-type", "Values": ["Interface"]},
        ]
    )
    prefix = f"com.amazonaws.{region}."
    return {
        e["ServiceName"].removeprefix(prefix)
        for page in pages
        for e in page["VpcEndpoints"]
        if e.get("PrivateDnsEnabled") and e.get("State", "").lower() == "available"
    }


def gateway_prefix_lists(ec2: Any, region: str) -> dict[str, str]:
    """Prefix list id -> short name (s3, dynamodb) of the region's gateway endpoint services."""
    prefix = f"com.amazonaws.{region}."
    pages = ec2.get_paginator("describe_prefix_lists").paginate(
        Filters=[{"Name": "prefix-list-name", "Values": [prefix + s for s in GATEWAY_SERVICES]}]
    )
    return {
        p["PrefixListId"]: p["PrefixListName"].removeprefix(prefix)
        for page in pages
        for p in page["PrefixLists"]
        if p["PrefixListName"].removeprefix(prefix) in GATEWAY_SERVICES
    }


def gateway_services(
    routes: Iterable[Mapping[str, Any]], prefix_lists: Mapping[str, str]
) -> set[str]:
    return {
        prefix_lists[r["DestinationPrefixListId"]]
        for r in routes
        if r.get("DestinationPrefixListId") in prefix_lists
        and str(r.get("GatewayId", "")).startswith("vpce-")
        and r.get("State", "active") == "active"
    }


def egress(routes: Iterable[Mapping[str, Any]], subnet: Mapping[str, Any], public_ip: bool) -> str:
    """How the subnet reaches the internet ('' when it does not)."""
    for route in routes:
        if route.get("DestinationCidrBlock") != "0.0.0.0/0" or route.get("State") == "blackhole":
            continue
        for target in _EGRESS_TARGETS:
            if route.get(target):
                return route[target]
        gateway = str(route.get("GatewayId", ""))
        if gateway.startswith("vgw-"):
            return gateway
        if gateway.startswith("igw-") and public_ip and subnet.get("MapPublicIpOnLaunch"):
            return gateway
    return ""


def unreachable(
    ec2: Any, region: str, subnet_ids: list[str], services: list[str], public_ip: bool
) -> list[str]:
    """One line per subnet that cannot reach every one of `services`."""
    subnets = ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
    prefix_lists = gateway_prefix_lists(ec2, region)
    interfaces: dict[str, set[str]] = {}
    problems = []
    for subnet in subnets:
        table = route_table_of(ec2, subnet)
        if table is None:
            problems.append(
                f"{subnet['SubnetId']} has no route table, not even its VPC's main one; "
                "associate one that reaches the services"
            )
            continue
        routes = table.get("Routes", [])
        if egress(routes, subnet, public_ip):
            continue
        vpc = subnet["VpcId"]
        if vpc not in interfaces:
            interfaces[vpc] = interface_services(ec2, vpc, region)
        reached = gateway_services(routes, prefix_lists) | interfaces[vpc]
        missing = [s for s in services if s not in reached]
        if not missing:
            continue
        table_id = table["RouteTableId"]
        fixes = []
        for service in missing:
            if service in GATEWAY_SERVICES:
                fixes.append(
                    f"aws ec2 create-vpc-endpoint --vpc-id {vpc} --service-name "
                    f"com.amazonaws.{region}.{service} --route-table-ids {table_id}"
                )
            else:
                fixes.append(
                    f"aws ec2 create-vpc-endpoint --vpc-id {vpc} --vpc-endpoint-type Interface "
                    f"--service-name com.amazonaws.{region}.{service} --subnet-ids "
                    f"{subnet['SubnetId']} --security-group-ids <a group allowing HTTPS in> "
                    "--private-dns-enabled"
                )
        problems.append(
            f"{subnet['SubnetId']} (route table {table_id}) cannot reach "
            f"{', '.join(missing)}: it has no NAT route"
            + (" and assigns no public IP behind its internet gateway" if public_ip else "")
            + " and no VPC endpoint for them; add a NAT gateway route, or: "
            + "; ".join(fixes)
        )
    return problems


def step(request: Request) -> Answer:
    props = request.properties
    subnets = [s for s in props["Subnets"] if s]
    physical = f"subnet-reach-{props['Parameter']}"
    if request.type == "Delete" or not subnets:
        return Answer(request.physical_id or physical)
    ec2 = boto3.client("ec2")
    region = ec2.meta.region_name
    public_ip = str(props.get("PublicIp")).lower() == "true"
    try:
        problems = unreachable(ec2, region, subnets, list(props["Services"]), public_ip)
    except ClientError as exc:
        # InvalidSubnetID.NotFound (another region or account, deleted) or .Malformed.
        if not exc.response["Error"]["Code"].startswith("InvalidSubnetID."):
            raise
        raise StepRefused(
            f"{props['Parameter']}: {', '.join(subnets)}: "
            f"{exc.response['Error']['Code']}: {exc.response['Error'].get('Message', '')}; "
            "name subnets of this region and account"
        ) from exc
    if problems:
        raise StepRefused(f"{props['Parameter']}: " + " | ".join(problems))
    return Answer(
        physical,
        reason=f"{props['Parameter']}: every subnet reaches {', '.join(props['Services'])}",
    )


handler = handler_for(step)
