"""The one place that chooses adapters: the domain services wired to the adapters the
configuration (dropflow.config) names, by URL scheme, never by `if local:` branches.

Each factory builds its object once per execution environment (a Lambda cold start, or one
local runtime), so handlers never create clients or connections per request. Adapter imports
are lazy, so that a local run never imports boto3 and a Lambda never imports the sqlite3
adapters it does not use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from dropflow.adapters.local.event_log import JsonLinesEventPublisher, NullEventPublisher
from dropflow.config import limit_settings, pricing_settings, settings
from dropflow.errors import ConfigError
from dropflow.ports import Compute, ContainerTier, EventPublisher, ObjectStore, Registry
from dropflow.records.catalog import Catalog
from dropflow.serving.forwarding import ContainerClient
from dropflow.vocabulary.routing import RoutePolicy

if TYPE_CHECKING:  # the training control plane, imported by the factories that build it, so
    # that the serving functions' cold start does not load it
    from dropflow.control.launcher import Launcher
    from dropflow.control.tracker import Tracker
    from dropflow.records.jobs import JobStore
    from dropflow.serving.service import PredictionService
    from dropflow.vocabulary.routing import Route


@cache
def store() -> ObjectStore:
    return open_store(settings().store_url)


@cache
def registry() -> Registry:
    return open_registry(settings().registry_url)


@cache
def compute() -> Compute:
    return open_compute(settings().compute_url)


@cache
def jobs() -> JobStore:
    from dropflow.records.jobs import JobStore

    return JobStore(registry())


@cache
def catalog() -> Catalog:
    return Catalog(registry())


@cache
def launcher() -> Launcher:
    from dropflow.control.launcher import Launcher

    cfg = settings()
    return Launcher(
        store(),
        registry(),
        compute(),
        max_attempts=cfg.max_attempts,
        claim_ttl_seconds=cfg.claim_ttl_seconds,
        limits=limit_settings().limits(),
    )


@cache
def events() -> EventPublisher:
    """Where promotion's events go: DROPFLOW_EVENT_LOG (a JSON-lines file) when set, else the
    EventBridge bus DROPFLOW_EVENT_BUS when set (the stack sets it), else nowhere."""
    log = os.environ.get("DROPFLOW_EVENT_LOG")
    if log:
        return JsonLinesEventPublisher(Path(log))
    bus = os.environ.get("DROPFLOW_EVENT_BUS")
    if bus:
        from dropflow.adapters.aws.eventbridge_events import EventBridgePublisher

        return EventBridgePublisher(bus)
    return NullEventPublisher()


@cache
def tracker() -> Tracker:
    from dropflow.control.tracker import Tracker

    return Tracker(launcher())


@cache
def route_policy() -> RoutePolicy:
    """The routing thresholds promotion applies (DROPFLOW_LAMBDA_MAX_MODEL_MB, ...)."""
    return RoutePolicy.from_settings(settings())


@cache
def container_tier() -> ContainerTier:
    """What promotion asks for capacity: DROPFLOW_CONTAINER_TIER_URL (asg:// or process://),
    or no tier at all when it is empty."""
    return open_tier(settings().container_tier_url)


@cache
def container_client() -> ContainerClient | None:
    """Where the predict function forwards large models: DROPFLOW_CONTAINER_URL, if set."""
    cfg = settings()
    if not cfg.container_url:
        return None
    return ContainerClient(
        cfg.container_url,
        timeout=cfg.container_timeout_seconds,
        retry_after=cfg.container_retry_after_seconds,
    )


def prediction_service(*, served_by: Route | None = None, share: int = 1) -> PredictionService:
    """A prediction service over the configured store and registry (built by each caller once:
    the predict function at cold start, each container worker at its start).

    `served_by` overrides DROPFLOW_SERVED_BY (the container tier serves every version itself).
    `share` is how many such services split this machine (the container's worker processes):
    each gets that share of the session memory budget, unless DROPFLOW_MODEL_CACHE_MB sets one
    per service, and of the CPUs for onnxruntime's threads.
    """
    # Imported here: the functions without the onnxruntime layer never call this.
    from dropflow.serving.service import ModelCache, PredictionService
    from dropflow.vocabulary.onnx_session import available_cpus
    from dropflow.vocabulary.routing import default_cache_budget_mb

    cfg = settings()
    budget_mb = cfg.model_cache_mb
    if budget_mb is None and share > 1:
        budget_mb = default_cache_budget_mb() / share
    return PredictionService(
        ModelCache(
            store(),
            registry(),
            champion_ttl=cfg.champion_ttl_seconds,
            budget_mb=budget_mb,
            memory_factor=cfg.session_memory_factor,
            threads=max(1, available_cpus() // share),
        ),
        tier=container_client(),
        served_by=served_by or cfg.served_by,
    )


def reset() -> None:
    """Forget every cached object and the settings (a new local home, or a test)."""
    for factory in (store, registry, compute, jobs, catalog, launcher, tracker, events):
        factory.cache_clear()
    for factory in (route_policy, container_tier, container_client):
        factory.cache_clear()
    settings.cache_clear()
    for opener in (open_store, open_registry, open_compute):
        opener.cache_clear()


# ---------------------------------------------------------------- adapters by URL
def _path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ConfigError(
            f"{url!r}: a local URL needs an absolute path, e.g. file:///home/me/bucket"
        )
    return Path(parsed.path)


@lru_cache(maxsize=8)
def open_store(url: str) -> ObjectStore:
    """The ObjectStore for `file:///dir` or `s3://bucket[/prefix]`, cached per URL."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        from dropflow.adapters.local.directory_store import DirectoryStore

        return DirectoryStore(_path(url))
    if scheme == "s3":
        from dropflow.adapters.aws.s3_store import S3Store

        parsed = urlparse(url)
        return S3Store(parsed.netloc, prefix=parsed.path.lstrip("/"))
    raise ConfigError(f"DROPFLOW_STORE_URL {url!r}: scheme must be file:// or s3://")


@lru_cache(maxsize=8)
def open_registry(url: str) -> Registry:
    """The Registry for `sqlite:///file.db` or `dynamodb://table`, cached per URL."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from dropflow.adapters.local.sqlite_registry import SqliteRegistry

        return SqliteRegistry(_path(url))
    if scheme == "dynamodb":
        from dropflow.adapters.aws.dynamodb_registry import DynamoRegistry

        return DynamoRegistry(urlparse(url).netloc)
    raise ConfigError(f"DROPFLOW_REGISTRY_URL {url!r}: scheme must be sqlite:// or dynamodb://")


@lru_cache(maxsize=8)
def open_compute(url: str) -> Compute:
    """The Compute for `process:///state-dir` (child processes) or `ec2://<launch template>`.

    An EC2 compute reads its subnets from $DROPFLOW_TRAINING_SUBNET_IDS (a comma list), launches
    only the stack owner's allowed types, $DROPFLOW_TRAINING_INSTANCE_TYPES (dropflow.config.
    LimitSettings; also its pools when a request names none), and
    tags its instances dropflow:stack=$DROPFLOW_STACK_NAME when that is set. It prices
    instance types with the stack owner's $DROPFLOW_ON_DEMAND_PRICES first, then the AWS
    Price List API (cached for $DROPFLOW_PRICE_LIST_TTL_SECONDS), and launches no type that
    neither prices.

    A process compute hands its children the IMDS emulator at $DROPFLOW_LOCAL_IMDS_URL
    (set by the local runtime, which serves the same state dir), if any. Read when the
    adapter is first opened: the runtime sets it before then.
    """
    scheme = urlparse(url).scheme
    if scheme == "process":
        from dropflow.adapters.local.process_compute import ProcessCompute

        prices = pricing_settings()
        return ProcessCompute(
            _path(url),
            metadata_url=os.environ.get("DROPFLOW_LOCAL_IMDS_URL") or None,
            spot_price=prices.local_spot_price,
            on_demand_price=prices.local_on_demand_price,
        )
    if scheme == "ec2":
        from dropflow.adapters.aws.ec2_compute import Ec2Compute
        from dropflow.adapters.aws.price_list import PriceListPrices

        template = urlparse(url).netloc
        if not template:
            raise ConfigError(
                f"DROPFLOW_COMPUTE_URL {url!r}: name the launch template, e.g. ec2://lt-0abc123"
            )
        stack = os.environ.get("DROPFLOW_STACK_NAME")
        prices = pricing_settings()
        return Ec2Compute(
            template,
            subnet_ids=_comma_list("DROPFLOW_TRAINING_SUBNET_IDS"),
            instance_types=limit_settings().training_instance_types,
            tags={"dropflow:stack": stack} if stack else None,
            on_demand_prices=prices.on_demand_prices,
            price_list=PriceListPrices(ttl_seconds=prices.price_list_ttl_seconds),
        )
    raise ConfigError(f"DROPFLOW_COMPUTE_URL {url!r}: scheme must be process:// or ec2://")


def _comma_list(variable: str) -> tuple[str, ...]:
    """The non-empty items of a comma-separated environment variable."""
    return tuple(item.strip() for item in os.environ.get(variable, "").split(",") if item.strip())


# ---------------------------------------------------------------- the container tier
class NoContainerTier:
    """The tier where none is configured: a `container` version waits with 503s for one."""

    def scale_out(self, minimum: int = 1) -> str:
        return (
            "no container tier is configured (DROPFLOW_CONTAINER_TIER_URL): versions routed "
            "to it answer 503 until one is deployed"
        )

    def scale_in(self) -> str:
        return "no container tier is configured: nothing to scale in"


def open_tier(url: str, environ: Mapping[str, str] | None = None) -> ContainerTier:
    """The ContainerTier for `asg://<group name>`, `process:///state-dir`, or none ("")."""
    if not url:
        return NoContainerTier()
    parsed = urlparse(url)
    if parsed.scheme == "asg":
        from dropflow.adapters.aws.autoscaling_tier import AutoScalingTier

        if not parsed.netloc:
            raise ConfigError(
                f"DROPFLOW_CONTAINER_TIER_URL {url!r}: name the group, e.g. asg://my-stack-serving"
            )
        return AutoScalingTier(parsed.netloc)
    if parsed.scheme == "process":
        from dropflow.adapters.local.process_tier import ProcessTier

        return ProcessTier(parsed.path)
    raise ConfigError(
        f"DROPFLOW_CONTAINER_TIER_URL {url!r}: scheme must be asg:// or process://, "
        "or leave it empty"
    )
