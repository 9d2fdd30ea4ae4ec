"""What training costs: each job's cost ledger, and what its budget counts.

Prices are USD per instance-hour. An attempt records, at launch, the price it runs at (the spot
price of its type and zone, or the on-demand price) and the on-demand price of the same type
(what the same hours would have cost without spot). The ledger turns those into money:

    attempt cost          = price_per_hour x seconds run / 3600
    on-demand equivalent  = on_demand_price_per_hour x seconds run / 3600
    savings               = on-demand equivalent - cost (and as a percent of the former)

"Seconds run" is billed time: from the instance's launch to the attempt's end (or now, while
it runs). A price that was never learnt is unknown, and so is every total it takes part in:
the ledger says "unknown", never 0, and so does the budget (`budget_spend`). Nothing here
imports boto3: the compute adapter learns the prices at launch (on EC2, spot prices from EC2
and on-demand ones from the stack owner or the Price List API, dropflow.vocabulary.prices).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from dropflow.records.jobs import Attempt, Job


# --------------------------------------------------------------------------- the ledger
@dataclass(frozen=True)
class AttemptCost:
    """One attempt's line in the ledger. None means unknown."""

    number: int
    instance_type: str | None
    lifecycle: str | None
    price_per_hour: float | None
    on_demand_price_per_hour: float | None
    seconds_run: float
    cost_usd: float | None
    on_demand_equivalent_usd: float | None
    seconds_lost: float


@dataclass(frozen=True)
class Ledger:
    """A job's cost: its attempts and their totals. A total is None (unknown) as soon as one
    attempt that ran has an unknown price; `unpriced_attempts` says how many."""

    attempts: list[AttemptCost]
    seconds_run: float
    cost_usd: float | None
    on_demand_equivalent_usd: float | None
    savings_usd: float | None
    savings_percent: float | None
    seconds_lost: float
    unpriced_attempts: int

    def to_dict(self) -> dict[str, Any]:
        """The ledger as JSON-able data (for the card and `dropflow status --json`)."""
        return asdict(self)


def seconds_run(attempt: Attempt, now: float) -> float:
    """Billed seconds of an attempt: from its instance's launch to its end (or `now`).

    An attempt that never got an instance ran (and cost) nothing.
    """
    if attempt.instance_id is None:
        return 0.0
    start = attempt.launched_at if attempt.launched_at is not None else attempt.started_at
    if start is None:
        return 0.0
    end = attempt.ended_at if attempt.ended_at is not None else now
    return max(0.0, end - start)


def _usd(price: float | None, seconds: float) -> float | None:
    if seconds == 0.0:
        return 0.0  # nothing ran: nothing was billed, whatever the price
    return None if price is None else price * seconds / 3600.0


def attempt_cost(attempt: Attempt, now: float) -> AttemptCost:
    """The ledger line of one attempt, as of `now`."""
    seconds = seconds_run(attempt, now)
    return AttemptCost(
        number=attempt.number,
        instance_type=attempt.instance_type,
        lifecycle=attempt.lifecycle,
        price_per_hour=attempt.price_per_hour,
        on_demand_price_per_hour=attempt.on_demand_price_per_hour,
        seconds_run=round(seconds, 3),
        cost_usd=_round(_usd(attempt.price_per_hour, seconds)),
        on_demand_equivalent_usd=_round(_usd(attempt.on_demand_price_per_hour, seconds)),
        seconds_lost=attempt.seconds_lost or 0.0,
    )


def ledger(attempts: Iterable[Attempt], now: float | None = None) -> Ledger:
    """The cost ledger of a job's attempts as of `now` (default: the current time)."""
    now = time.time() if now is None else now
    lines = [attempt_cost(a, now) for a in attempts]
    cost = _total(line.cost_usd for line in lines)
    on_demand = _total(line.on_demand_equivalent_usd for line in lines)
    savings = percent = None
    if cost is not None and on_demand is not None:
        savings = round(on_demand - cost, 6)
        percent = round(100.0 * savings / on_demand, 1) if on_demand > 0 else None
    return Ledger(
        attempts=lines,
        seconds_run=round(sum(line.seconds_run for line in lines), 3),
        cost_usd=cost,
        on_demand_equivalent_usd=on_demand,
        savings_usd=savings,
        savings_percent=percent,
        seconds_lost=round(sum(line.seconds_lost for line in lines), 3),
        unpriced_attempts=sum(1 for line in lines if line.cost_usd is None),
    )


def job_ledger(job: Job, now: float | None = None) -> Ledger:
    """The ledger of `job` as of `now`."""
    return ledger(job.attempts, now)


def unpriced_runs(attempts: Iterable[Attempt], now: float) -> list[Attempt]:
    """The attempts that ran (billed seconds > 0) with neither a price nor an on-demand
    price: what they cost cannot be known."""
    return [
        a
        for a in attempts
        if a.price_per_hour is None
        and a.on_demand_price_per_hour is None
        and seconds_run(a, now) > 0
    ]


def budget_spend(attempts: Iterable[Attempt], now: float) -> float | None:
    """USD a job has spent as far as its budget is concerned, as of `now`; None when that
    cannot be known.

    Conservative where a price is unknown: an attempt without its own price is counted at
    its on-demand price (spot never costs more than that). An attempt that ran with neither
    price makes the spend unknown (None), never 0: `unpriced_runs` names such attempts.
    """
    spent = 0.0
    for attempt in attempts:
        price = attempt.price_per_hour
        if price is None:
            price = attempt.on_demand_price_per_hour
        seconds = seconds_run(attempt, now)
        if price is None:
            if seconds > 0:
                return None
            continue
        spent += price * seconds / 3600.0
    return spent


def _total(values: Iterable[float | None]) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return round(total, 6)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def describe_usd(value: float | None) -> str:
    """`$1.23` (or `$0.0042` below a cent), or `unknown`."""
    if value is None:
        return "unknown"
    if 0 < abs(value) < 0.01:
        return f"${value:.4f}"
    return f"${value:,.2f}"
