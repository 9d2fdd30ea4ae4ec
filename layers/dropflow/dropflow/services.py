"""The domain services wired to the adapters the configuration names.

Each factory builds its object once per execution environment (a Lambda cold start, or one
local runtime), so handlers never create clients or connections per request.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from dropflow import adapters
from dropflow.catalog import Catalog
from dropflow.config import settings
from dropflow.container_tier import ContainerClient, ContainerTier, open_tier
from dropflow.events import EventPublisher, JsonLinesEventPublisher, NullEventPublisher
from dropflow.ports import Compute, ObjectStore, Registry
from dropflow.routing import RoutePolicy

if TYPE_CHECKING:  # the training control plane, imported by the factories that build it, so
    # that the serving functions' cold start does not load it
    from dropflow.jobs import JobStore
    from dropflow.launcher import Launcher
    from dropflow.tracker import Tracker


@cache
def store() -> ObjectStore:
    return adapters.open_store(settings().store_url)


@cache
def registry() -> Registry:
    return adapters.open_registry(settings().registry_url)


@cache
def compute() -> Compute:
    return adapters.open_compute(settings().compute_url)


@cache
def jobs() -> JobStore:
    from dropflow.jobs import JobStore

    return JobStore(registry())


@cache
def catalog() -> Catalog:
    return Catalog(registry())


@cache
def launcher() -> Launcher:
    from dropflow.launcher import Launcher

    cfg = settings()
    return Launcher(
        store(),
        registry(),
        compute(),
        max_attempts=cfg.max_attempts,
        claim_ttl_seconds=cfg.claim_ttl_seconds,
    )


@cache
def events() -> EventPublisher:
    """Where promotion's events go: DROPFLOW_EVENT_LOG (a JSON-lines file) when set, else
    EventBridge (bus DROPFLOW_EVENT_BUS, default "default") when the store is S3, else nowhere.
    """
    log = os.environ.get("DROPFLOW_EVENT_LOG")
    if log:
        return JsonLinesEventPublisher(Path(log))
    if settings().store_url.startswith("s3://"):
        from dropflow.adapters.eventbridge_events import EventBridgePublisher

        return EventBridgePublisher(os.environ.get("DROPFLOW_EVENT_BUS") or "default")
    return NullEventPublisher()


@cache
def tracker() -> Tracker:
    from dropflow.tracker import Tracker

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


def reset() -> None:
    """Forget every cached object and the settings (a new local home, or a test)."""
    for factory in (store, registry, compute, jobs, catalog, launcher, tracker, events):
        factory.cache_clear()
    for factory in (route_policy, container_tier, container_client):
        factory.cache_clear()
    settings.cache_clear()
    for opener in (adapters.open_store, adapters.open_registry, adapters.open_compute):
        opener.cache_clear()
