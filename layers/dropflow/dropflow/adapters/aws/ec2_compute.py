"""Compute on EC2: one training instance per attempt, from the stack's launch template.

launch() is one EC2 CreateFleet request of type `instant` for a single instance: the launch
template ($Latest) with overrides over every (instance type x subnet) pool, spot with the
price-capacity-optimized strategy (or on-demand, as the request says). CreateFleet reports
failed pools in the answer's `Errors` instead of raising, so both are read: when no
instance comes back, LaunchError lists the error code of every pool and says in `kind`
what kind of failure it was (see ports.LaunchError and `classify`).

The launched instance carries its price, for the cost ledger (dropflow.records.ledger): a spot
instance the newest DescribeSpotPriceHistory price of its type and zone, an on-demand one
its type's on-demand price; both carry the on-demand price. A price EC2 cannot give is left
unknown (None) and logged; it never fails a launch.

The job travels with the instance as tags (DROPFLOW_JOB_ID, DROPFLOW_MODEL,
DROPFLOW_ATTEMPT, and `dropflow:managed=true` for list_instances and the watchdog); the
launch template turns on instance metadata tags, so the instance reads its job from IMDS.

Exactly once: the ClientToken is derived from (job id, attempt, lifecycle), so a retried
Lambda that repeats a launch gets the first call's fleet back instead of a second instance.
A new attempt or the on-demand fallback gets a new token. EC2 also answers a repeated
token with the first answer when that one failed, so a failed attempt is retried under a
new attempt number, never under the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dropflow.observability import logger
from dropflow.ports import Instance, InstanceState, LaunchError, LaunchRequest
from dropflow.vocabulary.prices import on_demand_price

# Single-GPU types of several families and generations: more pools, fewer capacity errors.
# The same list as the template's TrainingInstanceTypes default.
DEFAULT_GPU_TYPES: tuple[str, ...] = (
    "g6.xlarge",
    "g5.xlarge",
    "g4dn.xlarge",
    "g6.2xlarge",
    "g5.2xlarge",
)
MANAGED_TAG = "dropflow:managed"
JOB_TAG, MODEL_TAG, ATTEMPT_TAG = "DROPFLOW_JOB_ID", "DROPFLOW_MODEL", "DROPFLOW_ATTEMPT"
LIFECYCLES = ("spot", "on-demand")
# The spot price of a Linux instance (EC2-Classic and VPC descriptions name the same price).
_PRODUCTS = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")

_CLIENT_CONFIG = Config(retries={"max_attempts": 8, "mode": "standard"})
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
_NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
_STATES = {"pending": InstanceState.PENDING, "running": InstanceState.RUNNING}
# "User initiated (2026-11-23 10:15:00 GMT)" and the like.
_TRANSITION_TIME = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) GMT\)")
# Spot fallback: these kinds may succeed on-demand (spot quotas are separate from
# on-demand quotas, and on-demand has no spot price). A config error fails the same way
# on-demand, and a transient one is for the caller to retry later.
_FALLBACK_KINDS = frozenset({"capacity", "price", "quota"})
# When pools fail for different reasons, the error's kind is the first of these present:
# a pool without capacity is a better reason to fall back than another pool's bad setting.
_KIND_ORDER = ("capacity", "price", "quota", "transient", "config")

_CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "UnfulfillableCapacity",
        "InsufficientFreeAddressesInSubnet",
        "capacity-not-available",
        "capacity-oversubscribed",
        # The type is not offered in that zone: that pool simply has no capacity.
        "Unsupported",
    }
)
_PRICE_CODES = frozenset({"SpotMaxPriceTooLow", "price-too-low", "bad-bid"})
_QUOTA_CODES = frozenset(
    {
        "MaxSpotInstanceCountExceeded",
        "MaxSpotFleetRequestCountExceeded",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "InsufficientVcpuLimit",
        "MaxFleetCountExceeded",
        "TargetCapacityLimitExceededException",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)


def classify(code: str) -> str:
    """The LaunchError kind of an EC2 error code: capacity, price, quota, transient, config."""
    if code in _CAPACITY_CODES:
        return "capacity"
    if code in _PRICE_CODES:
        return "price"
    if code in _QUOTA_CODES:
        return "quota"
    if code in _TRANSIENT_CODES:
        return "transient"
    return "config"


def client_token(job_id: str, attempt: int, lifecycle: str) -> str:
    """The CreateFleet ClientToken of one launch: stable per (job, attempt, lifecycle).

    A hash, so it stays within CreateFleet's 64 characters whatever the job id's length.
    """
    digest = hashlib.sha256(f"{job_id}\0{attempt}\0{lifecycle}".encode()).hexdigest()
    return f"dropflow-{digest[:48]}"


class Ec2Compute:
    """A Compute that launches training instances with EC2 CreateFleet.

    `launch_template_id` is the stack's training launch template; `subnet_ids` the subnets
    to spread over (none: the template's network settings); `instance_types` the default
    pool types when a request names none. `client` is a boto3 EC2 client (tests pass one);
    by default one is created on first use. `clock` gives epoch seconds; `sleep` waits
    between the few DescribeInstances retries after a launch (eventual consistency).
    `tags` are added to every instance and volume (e.g. {"dropflow:stack": name}).
    `on_demand_prices` (USD/hour per type) override dropflow.vocabulary.prices's table (the
    wiring passes $DROPFLOW_ON_DEMAND_PRICES).
    """

    def __init__(
        self,
        launch_template_id: str,
        *,
        subnet_ids: Sequence[str] = (),
        instance_types: Sequence[str] = DEFAULT_GPU_TYPES,
        client: Any = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        tags: Mapping[str, str] | None = None,
        on_demand_prices: Mapping[str, float] | None = None,
    ) -> None:
        if not launch_template_id:
            raise ValueError("Ec2Compute needs a launch template id")
        if not instance_types:
            raise ValueError("Ec2Compute needs at least one default instance type")
        self.launch_template_id = launch_template_id
        self.subnet_ids = tuple(subnet_ids)
        self.instance_types = tuple(instance_types)
        self.clock = clock
        self.sleep = sleep
        self.tags = dict(tags or {})
        self.on_demand_prices = dict(on_demand_prices or {})
        self._client = client
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Ec2Compute({self.launch_template_id!r})"

    @property
    def client(self) -> Any:
        """The boto3 EC2 client, created once on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = boto3.client("ec2", config=_CLIENT_CONFIG)
        return self._client

    # ------------------------------------------------------------------ Compute
    def launch(self, request: LaunchRequest) -> Instance:
        """One instance for `request` in any of its pools, at request.lifecycle.

        Raises LaunchError (with `kind`) when no instance came back; its message names the
        error code of each pool that failed. request.environment is not passed on: an EC2
        instance's environment comes from the launch template, its job from the tags.
        """
        if request.lifecycle not in LIFECYCLES:
            raise LaunchError(
                f"job {request.job_id} attempt {request.attempt}: lifecycle "
                f"{request.lifecycle!r} is not one of {', '.join(LIFECYCLES)}",
                kind="config",
            )
        what = f"job {request.job_id} attempt {request.attempt} ({request.lifecycle})"
        try:
            answer = self.client.create_fleet(**self.fleet_request(request))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            message = exc.response.get("Error", {}).get("Message", "")
            raise LaunchError(
                f"{what}: CreateFleet failed: {code}: {message}", kind=classify(code)
            ) from exc
        except BotoCoreError as exc:
            raise LaunchError(f"{what}: CreateFleet failed: {exc}", kind="transient") from exc

        launched = [
            (group, instance_id)
            for group in answer.get("Instances") or []
            for instance_id in group.get("InstanceIds") or []
        ]
        errors = answer.get("Errors") or []
        if not launched:
            kinds = {classify(e.get("ErrorCode", "")) for e in errors}
            kind = next((k for k in _KIND_ORDER if k in kinds), "capacity")
            detail = "; ".join(_describe_error(e) for e in errors) or "no instance, no error"
            raise LaunchError(f"{what}: no instance launched: {detail}", kind=kind)
        group, instance_id = launched[0]
        return self._priced(self._launched(instance_id, group, request))

    def launch_any(self, request: LaunchRequest, *, allow_on_demand: bool) -> Instance:
        """Spot first, then (if allowed) on-demand: the policy of issue 4.

        Spot already spreads over every pool in one CreateFleet call. On-demand is tried
        only when spot failed for capacity, price or quota (spot quotas are separate from
        on-demand ones); a config or transient failure is raised as it is, since on-demand
        would fail the same way or the caller should simply retry later. The LaunchError
        raised at the end lists every attempt's reasons; its kind is the last attempt's.
        """
        spot = _with_lifecycle(request, "spot")
        try:
            return self.launch(spot)
        except LaunchError as exc:
            spot_error = exc
        if not allow_on_demand:
            raise LaunchError(
                f"{spot_error}; on-demand not tried: the spec does not allow on-demand",
                kind=spot_error.kind,
            ) from spot_error
        if spot_error.kind not in _FALLBACK_KINDS:
            raise LaunchError(
                f"{spot_error}; on-demand not tried: a {spot_error.kind} error would "
                "fail on-demand too",
                kind=spot_error.kind,
            ) from spot_error
        try:
            return self.launch(_with_lifecycle(request, "on-demand"))
        except LaunchError as exc:
            raise LaunchError(f"{spot_error}; then {exc}", kind=exc.kind) from exc

    def describe(self, instance_id: str) -> Instance | None:
        """The instance as it is now; None for an unknown id or one not launched by dropflow."""
        raw = self._describe_raw(instance_id)
        return _instance(raw) if raw is not None else None

    def terminate(self, instance_id: str) -> None:
        """Terminate a dropflow instance; an unknown, ended or foreign id is left alone."""
        raw = self._describe_raw(instance_id)
        if raw is None or _instance(raw) is None:
            return  # never terminate an instance dropflow did not launch
        if raw.get("State", {}).get("Name") == "terminated":
            return
        try:
            self.client.terminate_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                raise

    def list_instances(self) -> list[Instance]:
        """Every instance tagged dropflow:managed=true that EC2 still reports, oldest first.

        EC2 keeps a terminated instance visible for about an hour; after that it is gone.
        """
        found = []
        paginator = self.client.get_paginator("describe_instances")
        pages = paginator.paginate(Filters=[{"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]}])
        for page in pages:
            for reservation in page.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    inst = _instance(raw)
                    if inst is not None:
                        found.append(inst)
        found.sort(key=lambda inst: (inst.launched_at, inst.instance_id))
        return found

    # ------------------------------------------------------------------ the request
    def fleet_request(self, request: LaunchRequest) -> dict[str, Any]:
        """The CreateFleet parameters for `request` (public for tests and dry runs)."""
        types = tuple(request.instance_types) or self.instance_types
        overrides: list[dict[str, str]] = [
            {"InstanceType": t, "SubnetId": s} if s else {"InstanceType": t}
            for t in dict.fromkeys(types)
            for s in (self.subnet_ids or ("",))
        ]
        tags = [
            {"Key": key, "Value": value}
            for key, value in {
                **self.tags,
                JOB_TAG: request.job_id,
                MODEL_TAG: request.model,
                ATTEMPT_TAG: str(request.attempt),
                MANAGED_TAG: "true",
            }.items()
        ]
        params: dict[str, Any] = {
            "Type": "instant",
            "ClientToken": client_token(request.job_id, request.attempt, request.lifecycle),
            "TargetCapacitySpecification": {
                "TotalTargetCapacity": 1,
                "DefaultTargetCapacityType": request.lifecycle,
            },
            "LaunchTemplateConfigs": [
                {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateId": self.launch_template_id,
                        "Version": "$Latest",
                    },
                    "Overrides": overrides,
                }
            ],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if request.lifecycle == "spot":
            params["TargetCapacitySpecification"]["SpotTargetCapacity"] = 1
            params["SpotOptions"] = {"AllocationStrategy": "price-capacity-optimized"}
        else:
            params["TargetCapacitySpecification"]["OnDemandTargetCapacity"] = 1
            params["OnDemandOptions"] = {"AllocationStrategy": "lowest-price"}
        return params

    # ------------------------------------------------------------------ internals
    def _launched(
        self, instance_id: str, group: dict[str, Any], request: LaunchRequest
    ) -> Instance:
        """The new instance, described by EC2 where it already can (it may lag a moment)."""
        for delay in (0.0, 0.5, 1.0, 2.0):
            if delay:
                self.sleep(delay)
            raw = self._describe_raw(instance_id)
            if raw is not None and (inst := _instance(raw)) is not None:
                return inst
        # Not visible yet: what CreateFleet said is enough for the caller to record.
        override = (group.get("LaunchTemplateAndOverrides") or {}).get("Overrides") or {}
        return Instance(
            instance_id=instance_id,
            job_id=request.job_id,
            attempt=request.attempt,
            state=InstanceState.PENDING,
            instance_type=group.get("InstanceType") or override.get("InstanceType", ""),
            lifecycle=group.get("Lifecycle") or request.lifecycle,
            zone=override.get("AvailabilityZone", ""),
            launched_at=self.clock(),
        )

    def _priced(self, instance: Instance) -> Instance:
        """The instance with its price and its type's on-demand price (None: unknown)."""
        on_demand = on_demand_price(instance.instance_type, self.on_demand_prices)
        if on_demand is None:
            logger.warning(
                "no on-demand price for this instance type; set DROPFLOW_ON_DEMAND_PRICES",
                extra={"instance_type": instance.instance_type},
            )
        if instance.lifecycle == "spot":
            price = self.spot_price(instance.instance_type, instance.zone)
        else:
            price = on_demand
        return dataclasses.replace(
            instance, price_per_hour=price, on_demand_price_per_hour=on_demand
        )

    def spot_price(self, instance_type: str, zone: str = "") -> float | None:
        """The current Linux spot price (USD/hour) of `instance_type` in `zone`; None when EC2
        cannot say (the failure is logged: a launch never fails for want of a price).

        The newest DescribeSpotPriceHistory entry of the zone; with no zone known, the
        highest of each zone's newest price, so that a budget is never underestimated.
        """
        params: dict[str, Any] = {
            "InstanceTypes": [instance_type],
            "ProductDescriptions": list(_PRODUCTS),
            # A start time with no end: the price in effect now, and any change since.
            "StartTime": datetime.fromtimestamp(self.clock(), UTC),
        }
        if zone:
            params["AvailabilityZone"] = zone
        try:
            history = self.client.describe_spot_price_history(**params)["SpotPriceHistory"]
        except (ClientError, BotoCoreError, KeyError) as exc:
            logger.warning(
                "spot price unknown",
                extra={"instance_type": instance_type, "zone": zone, "error": str(exc)},
            )
            return None
        newest: dict[str, tuple[datetime, float]] = {}
        for entry in history:
            if entry.get("InstanceType") != instance_type or "SpotPrice" not in entry:
                continue
            where = entry.get("AvailabilityZone", "")
            when = entry.get("Timestamp") or datetime.min.replace(tzinfo=UTC)
            if zone and where != zone:
                continue
            try:
                price = float(entry["SpotPrice"])
            except ValueError:
                continue
            if where not in newest or when > newest[where][0]:
                newest[where] = (when, price)
        if not newest:
            logger.warning(
                "spot price unknown: no price history",
                extra={"instance_type": instance_type, "zone": zone},
            )
            return None
        return max(price for _, price in newest.values())

    def _describe_raw(self, instance_id: str) -> dict[str, Any] | None:
        if not isinstance(instance_id, str) or not _INSTANCE_ID.fullmatch(instance_id):
            return None
        try:
            answer = self.client.describe_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise
        for reservation in answer.get("Reservations", []):
            for raw in reservation.get("Instances", []):
                if raw.get("InstanceId") == instance_id:
                    return raw
        return None


# ---------------------------------------------------------------------- EC2 facts
def _instance(raw: dict[str, Any]) -> Instance | None:
    """The port's view of a DescribeInstances item; None if dropflow did not launch it."""
    tags = _tags(raw.get("Tags"))
    job_id, attempt = tags.get(JOB_TAG), tags.get(ATTEMPT_TAG, "")
    if not job_id or not attempt.isdigit():
        return None
    state = _STATES.get(raw.get("State", {}).get("Name", ""), InstanceState.TERMINATED)
    ended_at = None
    if state == InstanceState.TERMINATED:
        found = _TRANSITION_TIME.search(raw.get("StateTransitionReason") or "")
        if found:
            ended = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")
            ended_at = ended.replace(tzinfo=UTC).timestamp()
    return Instance(
        instance_id=raw["InstanceId"],
        job_id=job_id,
        attempt=int(attempt),
        state=state,
        instance_type=raw.get("InstanceType", ""),
        lifecycle="spot" if raw.get("InstanceLifecycle") == "spot" else "on-demand",
        zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        launched_at=_epoch(raw.get("LaunchTime")),
        ended_at=ended_at,
    )


def _tags(tags: Iterable[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in tags or []}


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return 0.0


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe_error(error: dict[str, Any]) -> str:
    """`g5.xlarge/subnet-1 spot: InsufficientInstanceCapacity (message)` for one pool."""
    override = (error.get("LaunchTemplateAndOverrides") or {}).get("Overrides") or {}
    pool = "/".join(
        str(override[k])
        for k in ("InstanceType", "SubnetId", "AvailabilityZone")
        if override.get(k)
    )
    lifecycle = error.get("Lifecycle")
    head = " ".join(part for part in (pool or "fleet", lifecycle) if part)
    code = error.get("ErrorCode", "Unknown")
    message = error.get("ErrorMessage")
    return f"{head}: {code}" + (f" ({message})" if message else "")


def _with_lifecycle(request: LaunchRequest, lifecycle: str) -> LaunchRequest:
    return dataclasses.replace(request, lifecycle=lifecycle)
