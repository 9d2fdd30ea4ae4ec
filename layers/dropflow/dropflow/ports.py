"""Every port of dropflow: ObjectStore, Registry, Compute, EventPublisher and ContainerTier.
Domain code depends on these, never on an adapter; only dropflow.wiring chooses one.

Each port has a local adapter (adapters/local, the embedded default) and an AWS adapter
(adapters/aws); the contract suites in tests/contract run each against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dropflow.errors import DropflowError, NotFoundError


# --------------------------------------------------------------------------- ObjectStore
class ObjectNotFound(NotFoundError):
    """No object at that key."""


class InvalidKey(DropflowError, ValueError):
    """A key that is empty, absolute, or has '..' or empty segments.

    Also: a backslash or NUL, a segment starting with '.', or more than 1024 bytes
    (255 per segment). The full rule is `dropflow.vocabulary.keys.check_key`, shared by all
    adapters.
    """


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # changes whenever the content changes (S3 ETag, or a content hash locally)
    modified: float  # epoch seconds


@runtime_checkable
class ObjectStore(Protocol):
    """A flat key space of immutable-once-written blobs (S3 semantics).

    A put is atomic: a reader sees the old object or the whole new one, never half.
    Pointer objects (manifest.json, card.json) are written last by convention.
    """

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo: ...

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> ObjectInfo: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound."""
        ...

    def get_file(self, key: str, path: Path) -> None:
        """Write the object to `path` (atomically); raises ObjectNotFound."""
        ...

    def get_start(self, key: str, count: int) -> bytes:
        """The object's first `count` bytes (all of it when it is shorter; b"" when empty),
        without reading the rest; raises ObjectNotFound."""
        ...

    def get_end(self, key: str, count: int) -> bytes:
        """The object's last `count` bytes (all of it when it is shorter; b"" when empty),
        without reading the rest; raises ObjectNotFound."""
        ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` (recursive), sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    def set_retired(self, key: str, retired: bool) -> None:
        """Mark the object retired (or no longer retired); raises ObjectNotFound.

        A retired object may be removed by the store's own housekeeping (on S3, the bucket's
        lifecycle rule expires retired objects under models/); an unmarked one never is. The
        mark belongs to the object as written: a put over the key clears it. Marking twice is
        the same as marking once.
        """
        ...

    def is_retired(self, key: str) -> bool:
        """Whether the object carries the retired mark; raises ObjectNotFound."""
        ...


# --------------------------------------------------------------------------- Registry
@dataclass(frozen=True)
class Record:
    pk: str
    sk: str
    data: dict[str, Any]
    revision: int  # 1 on creation, +1 on every write; the token for compare-and-set
    expires_at: float | None = None


@runtime_checkable
class Registry(Protocol):
    """Items keyed by (pk, sk) holding JSON-able dicts (DynamoDB single-table semantics).

    A record whose `expires_at` has passed is treated as absent by every call, whether or
    not the backend has physically removed it yet (DynamoDB TTL deletes lazily).
    """

    def get(self, pk: str, sk: str) -> Record | None: ...

    def put(
        self, pk: str, sk: str, data: dict[str, Any], *, expires_at: float | None = None
    ) -> Record:
        """Unconditional write."""
        ...

    def put_if_absent(
        self, pk: str, sk: str, data: dict[str, Any], *, expires_at: float | None = None
    ) -> bool:
        """Create the record only if none (or only an expired one) exists. True if created."""
        ...

    def compare_and_set(
        self,
        pk: str,
        sk: str,
        data: dict[str, Any],
        *,
        expected_revision: int,
        expires_at: float | None = None,
    ) -> bool:
        """Replace the record only if its revision is still `expected_revision`."""
        ...

    def query(self, pk: str, *, sk_prefix: str = "") -> list[Record]:
        """Records under `pk` whose sk starts with `sk_prefix`, sorted by sk."""
        ...

    def delete(self, pk: str, sk: str) -> None: ...


# --------------------------------------------------------------------------- Compute
class InstanceState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    TERMINATED = "terminated"  # ended, for whatever reason; see exit_code where known


class LaunchError(DropflowError):
    """No capacity could be obtained; the message says why.

    `kind` classifies the cause, so a caller can choose its fallback:
      capacity   no capacity in the pools tried (another pool or on-demand may have some)
      price      the spot price is above the maximum price
      quota      an account limit (e.g. the spot vCPU quota) was reached
      transient  throttling or a service error: the same request may succeed later
      config     the request itself is wrong (template, permissions, parameters); default
    """

    def __init__(self, message: str, *, kind: str = "config") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class LaunchRequest:
    job_id: str
    model: str
    attempt: int
    instance_types: Sequence[str] = ()
    lifecycle: str = "spot"  # spot | on-demand
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Instance:
    instance_id: str
    job_id: str
    attempt: int
    state: InstanceState
    instance_type: str
    lifecycle: str
    zone: str
    launched_at: float
    ended_at: float | None = None
    exit_code: int | None = None  # known locally; None on EC2
    # USD per hour, learnt at launch (None: unknown, or an instance described later): what it
    # runs at (spot or on-demand price) and what the same type costs on-demand.
    price_per_hour: float | None = None
    on_demand_price_per_hour: float | None = None


@runtime_checkable
class Compute(Protocol):
    """Where training runs: an EC2 instance, or a child process locally.

    The job id travels with the instance (tags on EC2, environment locally) as
    DROPFLOW_JOB_ID / DROPFLOW_MODEL / DROPFLOW_ATTEMPT / DROPFLOW_INSTANCE_ID.
    """

    def launch(self, request: LaunchRequest) -> Instance: ...

    def describe(self, instance_id: str) -> Instance | None: ...

    def terminate(self, instance_id: str) -> None:
        """Stop the instance; terminating an ended or unknown instance is not an error."""
        ...

    def list_instances(self) -> list[Instance]:
        """Every instance this compute has launched for dropflow that is not long gone."""
        ...


# --------------------------------------------------------------------------- EventPublisher
class EventPublishError(Exception):
    """The event could not be delivered (the message says why)."""


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Deliver one event with source `dropflow`; raises EventPublishError on failure."""
        ...


# --------------------------------------------------------------------------- ContainerTier
@runtime_checkable
class ContainerTier(Protocol):
    """The container tier's capacity, as promotion asks for it."""

    def scale_out(self, minimum: int = 1) -> str:
        """Ask for at least `minimum` servers (never fewer than now); returns what was done,
        for the log. Idempotent."""
        ...

    def scale_in(self) -> str:
        """Ask for no server at all (no champion is routed here); returns what was done, for
        the log. Idempotent."""
        ...
