"""On-demand prices (USD per instance-hour): where they come from, and what to say when none.

A training instance type is launched only when dropflow knows its on-demand price, so that the
cost ledger and the per-job budget never count an hour at $0 (DESIGN.md, "Trust and limits").
Prices come, in this order, from

1. the stack owner: DROPFLOW_ON_DEMAND_PRICES, a JSON object such as {"g6.xlarge": 0.8048},
   which the stack parameter TrainingOnDemandPrices sets (`OwnerPrices`);
2. a price source for the rest, on AWS the Price List API in the stack's own region
   (dropflow.adapters.aws.price_list).

A type neither knows is *unpriced*: `PriceQuote.missing` says why, and `unpriced_reason`
turns that into the message a stack owner can act on.

There is deliberately no built-in price table: list prices differ per region and change, and
a table of one region's prices would cost every other region wrongly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# What a stack owner sets to price a type, named in every "unpriced" message.
OWNER_PRICES_PARAMETER = "TrainingOnDemandPrices"
OWNER_PRICES_VARIABLE = "DROPFLOW_ON_DEMAND_PRICES"


@dataclass(frozen=True)
class PriceQuote:
    """On-demand prices of some instance types in one region.

    `prices` maps each priced type to USD/hour (always > 0 unless the stack owner set 0);
    `missing` maps each unpriced type to why it has no price. A type is in one or the other.
    """

    prices: Mapping[str, float] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)

    def priced(self, instance_types: Sequence[str]) -> tuple[str, ...]:
        """The types of `instance_types` that have a price, in their order."""
        return tuple(t for t in instance_types if t in self.prices)


@runtime_checkable
class OnDemandPriceSource(Protocol):
    """Anything that can price instance types on-demand (Linux, shared tenancy)."""

    def on_demand_prices(self, region: str, instance_types: Sequence[str]) -> PriceQuote:
        """The quote for `instance_types` in `region`; never raises for a price it cannot
        learn: that type is in `missing`, with the reason."""
        ...


class OwnerPrices:
    """The stack owner's prices first; the types they do not price are asked of `fallback`
    (None: nobody else, and those types are unpriced)."""

    def __init__(
        self, owner: Mapping[str, float] | None, fallback: OnDemandPriceSource | None = None
    ) -> None:
        self.owner = {t: float(p) for t, p in (owner or {}).items()}
        self.fallback = fallback

    def __repr__(self) -> str:
        return f"OwnerPrices({sorted(self.owner)!r}, fallback={self.fallback!r})"

    def on_demand_prices(self, region: str, instance_types: Sequence[str]) -> PriceQuote:
        wanted = list(dict.fromkeys(instance_types))
        prices = {t: self.owner[t] for t in wanted if t in self.owner}
        rest = [t for t in wanted if t not in prices]
        missing: dict[str, str] = {}
        if rest and self.fallback is not None:
            quote = self.fallback.on_demand_prices(region, rest)
            prices.update({t: quote.prices[t] for t in rest if t in quote.prices})
            missing.update({t: quote.missing[t] for t in rest if t in quote.missing})
        for t in rest:
            if t not in prices and t not in missing:
                missing[t] = f"{OWNER_PRICES_VARIABLE} does not price it"
        return PriceQuote(prices=prices, missing=missing)


def unpriced_reason(missing: Mapping[str, str], region: str = "") -> str:
    """Why these types are not launched, and how the stack owner prices them."""
    where = f" in {region}" if region else ""
    listed = "; ".join(f"{t}: {why}" for t, why in missing.items())
    example = ", ".join(f'"{t}": <USD per hour>' for t in list(missing)[:2])
    return (
        f"no on-demand price{where} for {', '.join(missing)} ({listed}). dropflow launches "
        "only instance types it can price, so that a job's cost and budget never count an "
        f"hour at $0: set the stack parameter {OWNER_PRICES_PARAMETER} "
        f"({OWNER_PRICES_VARIABLE}) to a JSON object such as {{{example}}}, or allow the "
        "Price List API (pricing:GetProducts) to the launching functions"
    )
