"""Sizing the container tier to the champions, after a promotion or a rollback."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dropflow.errors import brief
from dropflow.ports import ContainerTier
from dropflow.vocabulary.routing import CONTAINER as CONTAINER_ROUTE

log = logging.getLogger(__name__)


def fit_to_champions(tier: ContainerTier, champion_routes: Sequence[str | None]) -> str:
    """Size the tier to what the champions (`champion_routes`: one route per model with a
    champion) need: at least one server while any is routed `container`, none once no champion
    is, since an idle server only costs money. Returns what the tier did, for the log."""
    if CONTAINER_ROUTE in champion_routes:
        return tier.scale_out(1)
    return tier.scale_in()


def fit_or_explain(tier: ContainerTier, champion_routes: Sequence[str | None]) -> str:
    """fit_to_champions's account, or "scaling failed: <why>" (logged) when the tier could not
    be sized: the promotion or rollback that asked stands, and a champion routed to the tier
    answers 503 until a server runs."""
    try:
        return fit_to_champions(tier, champion_routes)
    except Exception as exc:
        log.warning("could not size the container tier: %s", exc)
        return f"scaling failed: {brief(exc)}"
