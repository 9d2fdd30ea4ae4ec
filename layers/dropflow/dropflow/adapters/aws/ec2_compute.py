"""Compute on EC2: one training instance per attempt, from the stack's launch template.

launch() is one EC2 CreateFleet request of type `instant` for a single instance: the launch
template ($Latest) with overrides over every (instance type x subnet) pool, spot with the
price-capacity-optimized strategy (or on-demand, as the request says). CreateFleet reports
failed pools in the answer's `Errors` instead of raising, so both are read: when no
instance comes back, LaunchError lists the error code of every pool and says in `kind`
what kind of failure it was (see ports.LaunchError and `classify`).

Only the stack owner's allowed instance types are launched (the adapter's `instance_types`,
from DROPFLOW_TRAINING_INSTANCE_TYPES; the launching role's IAM policy allows no other), and
of those only the types with a known on-demand price (dropflow.vocabulary.prices:
the stack owner's DROPFLOW_ON_DEMAND_PRICES first, then the Price List API in the EC2
client's region, dropflow.adapters.aws.price_list). An unpriced type is left out of the
request and named; when no type is priced the launch fails (kind `config`) saying how to
price one. So the launched instance always carries its on-demand price, for the cost ledger
and the budget (dropflow.records.ledger); a spot instance also carries the newest
DescribeSpotPriceHistory price of its type and zone, left unknown (None, and logged) when EC2
cannot give it: that never fails a launch, and the budget then counts the on-demand price.

A quota failure (a new account's G and VT vCPU quota is 0, for spot and for on-demand) names
the quota as Service Quotas shows it, its code, and the one command that raises it to what
the smallest requested type needs (`quota_advice`).

The job travels with the instance as tags (DROPFLOW_JOB_ID, DROPFLOW_MODEL,
DROPFLOW_ATTEMPT, and `dropflow:managed=true` for list_instances and the watchdog); the
launch template turns on instance metadata tags, so the instance reads its job from IMDS.

Exactly once: the ClientToken is a hash of everything else in the CreateFleet request (the
job, attempt and lifecycle are in it, in the tags and the target capacity), so a repeated
identical request (botocore's retry of a call whose answer was lost) gets the first call's
fleet back instead of a second instance, and a request that differs in anything (another
attempt, the on-demand fallback, other instance types or subnets) gets a new token. EC2
answers a reused token with different parameters with IdempotentParameterMismatch; that
should not happen with such tokens, and when it does the adapter looks for the instance of
this job attempt (a tag search) and otherwise retries once under a fresh token, logging why
(kind `transient` if that fails too). EC2 also answers a repeated token with the first
answer when that one failed, so a failed attempt is retried under a new attempt number,
never under the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dropflow.adapters.aws.price_list import PriceListPrices
from dropflow.observability import logger
from dropflow.ports import Instance, InstanceState, LaunchError, LaunchRequest
from dropflow.vocabulary.limits import DEFAULT_INSTANCE_TYPES, INSTANCE_TYPES_SETTING, setting
from dropflow.vocabulary.prices import (
    OnDemandPriceSource,
    OwnerPrices,
    PriceQuote,
    unpriced_reason,
)

# The template's TrainingInstanceTypes default: the pools when nothing else is said.
DEFAULT_GPU_TYPES = DEFAULT_INSTANCE_TYPES
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
        # The ClientToken was used before with other parameters: the request itself is fine,
        # and launch() retries it under a fresh token (see the module docstring).
        "IdempotentParameterMismatch",
    }
)
# Quota codes that mean "not enough vCPUs in the account's quota for this purchase option":
# the ones quota_advice explains. (The fleet-count ones are quotas too, but not vCPUs.)
_VCPU_QUOTA_CODES = frozenset(
    {"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"}
    | {"InsufficientVcpuLimit"}
)
_MISMATCH = "IdempotentParameterMismatch"


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


def client_token(params: Mapping[str, Any], salt: str = "") -> str:
    """The CreateFleet ClientToken of the request `params` (any ClientToken in it ignored):
    the same for the same request, different for a request that differs in anything.

    A hash of the request as canonical JSON, so it stays within CreateFleet's 64 characters.
    `salt` makes a fresh token for the same request (the IdempotentParameterMismatch retry).
    """
    body = {k: v for k, v in params.items() if k != "ClientToken"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{canonical}\0{salt}".encode()).hexdigest()
    return f"dropflow-{digest[:48]}"


class _TokenMismatch(Exception):
    """CreateFleet said IdempotentParameterMismatch (handled inside launch)."""


class Ec2Compute:
    """A Compute that launches training instances with EC2 CreateFleet.

    `launch_template_id` is the stack's training launch template; `subnet_ids` the subnets
    to spread over (none: the template's network settings); `instance_types` the stack owner's
    allowlist: the pool types when a request names none, and the only types it launches.
    `client` is a boto3 EC2 client (tests pass one); by default one is created on first use.
    `clock` gives epoch seconds; `sleep` waits between the few DescribeInstances retries
    after a launch (eventual consistency).
    `tags` are added to every instance and volume (e.g. {"dropflow:stack": name}).
    `on_demand_prices` (USD/hour per type) are the stack owner's prices (the wiring passes
    $DROPFLOW_ON_DEMAND_PRICES); the types they leave out are priced by `price_list`
    (default: the Price List API, PriceListPrices). A type neither prices is not launched.
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
        price_list: OnDemandPriceSource | None = None,
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
        self.price_list = price_list if price_list is not None else PriceListPrices()
        self.prices = OwnerPrices(self.on_demand_prices, self.price_list)
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

    @property
    def region(self) -> str:
        """The region this adapter launches in (its EC2 client's), "" if unknown."""
        meta = getattr(self.client, "meta", None)
        return str(getattr(meta, "region_name", "") or "")

    # ------------------------------------------------------------------ Compute
    def launch(self, request: LaunchRequest) -> Instance:
        """One instance for `request` in any of its pools, at request.lifecycle.

        A request naming a type outside the allowlist (`instance_types`) launches nothing:
        LaunchError (kind config) names it. Only the request's types with an on-demand price
        are asked for; with none priced,
        LaunchError (kind config) names the unpriced types and how to price them. Raises
        LaunchError (with `kind`) when no instance came back; its message names the error
        code of each pool that failed, and for a vCPU quota the quota and the command that
        raises it. request.environment is not passed on: an EC2 instance's environment comes
        from the launch template, its job from the tags.
        """
        if request.lifecycle not in LIFECYCLES:
            raise LaunchError(
                f"job {request.job_id} attempt {request.attempt}: lifecycle "
                f"{request.lifecycle!r} is not one of {', '.join(LIFECYCLES)}",
                kind="config",
            )
        what = f"job {request.job_id} attempt {request.attempt} ({request.lifecycle})"
        types = self._types(request)
        refused = [t for t in types if t not in self.instance_types]
        if refused:
            # The launcher checks the spec first; this is the adapter's own line, as the IAM
            # policy's ec2:InstanceType condition is AWS's.
            raise LaunchError(
                f"{what}: {', '.join(refused)} not launched: not among the allowed instance "
                f"types ({', '.join(self.instance_types)}; {setting(INSTANCE_TYPES_SETTING)})",
                kind="config",
            )
        quote = self.prices.on_demand_prices(self.region, types)
        priced = quote.priced(types)
        if not priced:
            raise LaunchError(
                f"{what}: {unpriced_reason(quote.missing, self.region)}", kind="config"
            )
        if quote.missing:
            logger.warning(
                "instance types without an on-demand price are not launched",
                extra={"job_id": request.job_id, "unpriced": dict(quote.missing)},
            )
        params = self.fleet_request(request, instance_types=priced)
        try:
            answer = self._create_fleet(params, request, priced, what)
        except _TokenMismatch:
            logger.warning(
                "CreateFleet: IdempotentParameterMismatch (this ClientToken was used with "
                "other parameters); looking for this attempt's instance, else retrying once "
                "with a fresh token",
                extra={"job_id": request.job_id, "attempt": request.attempt},
            )
            earlier = self._attempt_instance(request, what)
            if earlier is not None:
                return self._priced(earlier, quote)
            params = {**params, "ClientToken": client_token(params, salt=uuid.uuid4().hex)}
            answer = self._create_fleet(params, request, priced, what, retried=True)

        launched = [
            (group, instance_id)
            for group in answer.get("Instances") or []
            for instance_id in group.get("InstanceIds") or []
        ]
        errors = answer.get("Errors") or []
        if not launched:
            kinds = {classify(e.get("ErrorCode", "")) for e in errors}
            kind = next((k for k in _KIND_ORDER if k in kinds), "capacity")
            detail = describe_errors(errors) or "no instance, no error"
            advice = (
                quota_advice(errors, request.lifecycle, priced, self.region)
                if kind == "quota"
                else ""
            )
            message = f"{what}: " + (f"{advice}; CreateFleet: " if advice else "")
            message += f"no instance launched: {detail}" + _left_out(quote)
            raise LaunchError(message, kind=kind)
        group, instance_id = launched[0]
        return self._priced(self._launched(instance_id, group, request), quote)

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
    def fleet_request(
        self, request: LaunchRequest, *, instance_types: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The CreateFleet parameters for `request` (public for tests and dry runs), over
        `instance_types` (default: the request's, else the adapter's), its ClientToken last."""
        types = tuple(instance_types) if instance_types is not None else self._types(request)
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
        params["ClientToken"] = client_token(params)
        return params

    def _types(self, request: LaunchRequest) -> tuple[str, ...]:
        """The pool types of `request`: its own, else the adapter's defaults; no repeats."""
        return tuple(dict.fromkeys(tuple(request.instance_types) or self.instance_types))

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

    def _create_fleet(
        self,
        params: dict[str, Any],
        request: LaunchRequest,
        priced: Sequence[str],
        what: str,
        *,
        retried: bool = False,
    ) -> dict[str, Any]:
        """CreateFleet's answer; its exceptions as LaunchError (a first token mismatch as
        _TokenMismatch, for launch to handle)."""
        try:
            return self.client.create_fleet(**params)
        except ClientError as exc:
            code = _code(exc) or "Unknown"
            if code == _MISMATCH and not retried:
                raise _TokenMismatch() from exc
            message = exc.response.get("Error", {}).get("Message", "")
            head = f"{what}: CreateFleet failed: {code}: {message}"
            if retried and code == _MISMATCH:
                head += " (again, under a fresh ClientToken)"
            if code in _VCPU_QUOTA_CODES:
                pools = [{"ErrorCode": code, "Lifecycle": request.lifecycle}]
                head = f"{quota_advice(pools, request.lifecycle, priced, self.region)}; {head}"
            raise LaunchError(head, kind=classify(code)) from exc
        except BotoCoreError as exc:
            raise LaunchError(f"{what}: CreateFleet failed: {exc}", kind="transient") from exc

    def _attempt_instance(self, request: LaunchRequest, what: str) -> Instance | None:
        """The pending or running instance already launched for this job attempt, if any."""
        filters = [
            {"Name": f"tag:{JOB_TAG}", "Values": [request.job_id]},
            {"Name": f"tag:{ATTEMPT_TAG}", "Values": [str(request.attempt)]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
        try:
            pages = self.client.get_paginator("describe_instances").paginate(Filters=filters)
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for raw in reservation.get("Instances", []):
                        if (inst := _instance(raw)) is not None:
                            return inst
        except (ClientError, BotoCoreError) as exc:
            raise LaunchError(
                f"{what}: CreateFleet answered IdempotentParameterMismatch and the instances of "
                f"this attempt could not be listed to rule out a second launch: {exc}",
                kind="transient",
            ) from exc
        return None

    def _priced(self, instance: Instance, quote: PriceQuote) -> Instance:
        """The instance with its price and its type's on-demand price.

        Every launched type is priced (launch requests priced types only); should EC2 not
        say which type it launched yet (or that type have no price), the highest on-demand
        price among the requested types is recorded: never $0.
        """
        on_demand = quote.prices.get(instance.instance_type)
        if on_demand is None and instance.instance_type:
            # An earlier request's instance (the token mismatch path): price its own type.
            own = self.prices.on_demand_prices(self.region, [instance.instance_type])
            on_demand = own.prices.get(instance.instance_type)
        if on_demand is None:
            on_demand = max(quote.prices.values())
            logger.warning(
                "launched instance type unknown: counted at the highest requested on-demand price",
                extra={"instance_id": instance.instance_id, "price_per_hour": on_demand},
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


def describe_errors(errors: Iterable[dict[str, Any]]) -> str:
    """CreateFleet's `Errors`, one clause per (lifecycle, code, message) naming its pools:
    `g6.xlarge/subnet-1, g5.xlarge/subnet-1 spot: InsufficientInstanceCapacity (message)`."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for error in errors:
        override = (error.get("LaunchTemplateAndOverrides") or {}).get("Overrides") or {}
        pool = "/".join(
            str(override[k])
            for k in ("InstanceType", "SubnetId", "AvailabilityZone")
            if override.get(k)
        )
        key = (
            str(error.get("Lifecycle") or ""),
            str(error.get("ErrorCode") or "Unknown"),
            str(error.get("ErrorMessage") or ""),
        )
        groups.setdefault(key, []).append(pool or "fleet")
    clauses = []
    for (lifecycle, code, message), pools in groups.items():
        head = ", ".join(dict.fromkeys(pools)) + (f" {lifecycle}" if lifecycle else "")
        clauses.append(f"{head}: {code}" + (f" ({message})" if message else ""))
    return "; ".join(clauses)


def _left_out(quote: PriceQuote) -> str:
    if not quote.missing:
        return ""
    return f" (not tried, no on-demand price: {', '.join(quote.missing)})"


# ---------------------------------------------------------------------- EC2 vCPU quotas
@dataclass(frozen=True)
class Quota:
    """An EC2 vCPU quota as the Service Quotas console names it; `code` None where dropflow
    has not verified it (the advice then looks the code up by name)."""

    name: str
    code: str | None


# The vCPU quotas of the families dropflow trains on, per purchase option. Names from the EC2
# User Guide's "On-Demand Instance quotas" and "Spot Instance quotas" pages; codes as Service
# Quotas reports them (service code ec2).
_G_AND_VT = {
    "spot": Quota("All G and VT Spot Instance Requests", "L-3819A6DF"),
    "on-demand": Quota("Running On-Demand G and VT instances", "L-DB2E81BA"),
}
_P_ON_DEMAND = Quota("Running On-Demand P instances", "L-417A185B")
_P_SPOT = Quota("All P4, P3 and P2 Spot Instance Requests", "L-7212CCBC")
_P5_SPOT = Quota("All P5 Spot Instance Requests", None)
_STANDARD = {
    "spot": Quota("All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", "L-34B43A08"),
    "on-demand": Quota(
        "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "L-1216C47A"
    ),
}
# Families whose letters start like a Standard one but have quotas of their own.
_NOT_STANDARD = frozenset({"dl", "hpc", "inf", "mac", "trn"})
_FAMILY = re.compile(r"([a-z]+)(\d*)")
_SIZE = re.compile(r"(\d*)xlarge")


def vcpu_quota(instance_type: str, lifecycle: str) -> Quota | None:
    """The vCPU quota a `lifecycle` (spot | on-demand) instance of `instance_type` counts
    against; None for a family dropflow does not know the quota of."""
    found = _FAMILY.match(instance_type.partition(".")[0])
    if found is None or lifecycle not in ("spot", "on-demand"):
        return None
    letters, generation = found.group(1), found.group(2)
    if letters == "vt" or letters.startswith("g"):
        return _G_AND_VT[lifecycle]
    if letters.startswith("p"):
        if lifecycle == "on-demand":
            return _P_ON_DEMAND
        if generation in ("2", "3", "4"):
            return _P_SPOT
        return _P5_SPOT if generation == "5" else None
    if letters[0] in "acdhimrtz" and letters not in _NOT_STANDARD:
        return _STANDARD[lifecycle]
    return None


def vcpus(instance_type: str) -> int | None:
    """The vCPUs of one `instance_type`, read from its size: large 2, xlarge 4, Nxlarge 4N
    (true of the G, P and Standard families' sizes); None for a size it cannot read (metal,
    medium, ...)."""
    size = instance_type.partition(".")[2]
    if size == "large":
        return 2
    found = _SIZE.fullmatch(size)
    if found is None:
        return None
    return 4 * int(found.group(1) or 1)


def quota_advice(
    errors: Iterable[dict[str, Any]], lifecycle: str, requested: Sequence[str], region: str
) -> str:
    """Which vCPU quota stopped these pools, and the command that raises it.

    `errors` are CreateFleet `Errors` items (or one made from an exception): those with a
    vCPU quota code count, each for its pool's type (every `requested` type when it names
    none) and its Lifecycle (else `lifecycle`). The desired value is what one instance of
    the smallest such type needs. "" when no error is a vCPU quota error.
    """
    by_quota: dict[Quota, list[str]] = {}
    unknown: list[str] = []  # types of a family whose quota dropflow does not know
    for error in errors:
        if error.get("ErrorCode") not in _VCPU_QUOTA_CODES:
            continue
        override = (error.get("LaunchTemplateAndOverrides") or {}).get("Overrides") or {}
        types = [override["InstanceType"]] if override.get("InstanceType") else list(requested)
        option = str(error.get("Lifecycle") or lifecycle)
        for instance_type in types:
            quota = vcpu_quota(instance_type, option)
            bucket = by_quota.setdefault(quota, []) if quota else unknown
            entry = instance_type if quota else f"{instance_type} ({option})"
            if entry not in bucket:
                bucket.append(entry)
    parts = [_raise_quota(quota, types, region) for quota, types in by_quota.items()]
    if unknown:
        where = f" in {region}" if region else ""
        parts.append(
            f"raise the EC2 vCPU quota of {', '.join(unknown)}{where} "
            "(Service Quotas console, Amazon EC2)"
        )
    return "; ".join(parts)


def _raise_quota(quota: Quota, types: Sequence[str], region: str) -> str:
    sized = [(n, t) for t in types if (n := vcpus(t)) is not None]
    # The smallest type (the first requested of equal ones): its vCPUs are enough to start.
    need, smallest = min(sized, key=lambda pair: pair[0]) if sized else (None, types[0])
    desired = str(need) if need is not None else f"<vCPUs of one {smallest}>"
    where = f" in {region}" if region else ""
    region_flag = f" --region {region}" if region else ""
    size = f"{need} vCPUs; " if need is not None else ""
    others = ", ".join(types)
    text = (
        f'the EC2 quota "{quota.name}" ({quota.code or "code below"}){where} is too low for '
        f"one {smallest} ({size}{others} count against it): raise it with "
        f"`aws service-quotas request-service-quota-increase --service-code ec2 "
        f"--quota-code {quota.code or '<its code>'} --desired-value {desired}{region_flag}` "
        "(the new total: add the vCPUs of instances already running under it)"
    )
    if quota.code is None:
        text += (
            f", its code from `aws service-quotas list-service-quotas --service-code ec2"
            f"{region_flag} --query \"Quotas[?QuotaName=='{quota.name}'].QuotaCode\"`"
        )
    return text


def _with_lifecycle(request: LaunchRequest, lifecycle: str) -> LaunchRequest:
    return dataclasses.replace(request, lifecycle=lifecycle)
