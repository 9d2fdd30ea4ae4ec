"""Times as dropflow writes them: whole seconds in UTC, from epoch seconds.

`2026-11-23T10:17:00Z` is what IMDS and EventBridge write and what a spec's deadline is kept
as; cards, job logs and the launcher's messages have always written the zone as `+00:00`
(Python's isoformat), and keep doing so. Job and version ids carry the compact form
`20261123T101700Z`, which sorts as the time does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso_utc(epoch: float | None = None, *, zone: str = "Z") -> str:
    """`epoch` (default: now) as `2026-11-23T10:17:00Z`, or `...+00:00` with zone="+00:00"."""
    return _utc(epoch).strftime("%Y-%m-%dT%H:%M:%S") + zone


def compact_utc(epoch: float | None = None) -> str:
    """`epoch` (default: now) as `20261123T101700Z`, the stamp in job and version ids."""
    return _utc(epoch).strftime("%Y%m%dT%H%M%SZ")


def _utc(epoch: float | None) -> datetime:
    return datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
