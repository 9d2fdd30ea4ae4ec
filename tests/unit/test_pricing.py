"""Prices and the cost ledger: the owner's prices first, unknown kept unknown, never $0."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dropflow.config import pricing_settings
from dropflow.errors import ConfigError
from dropflow.records.jobs import Attempt
from dropflow.records.ledger import (
    budget_spend,
    describe_usd,
    ledger,
    seconds_run,
    unpriced_runs,
)
from dropflow.vocabulary import prices
from dropflow.vocabulary.prices import OwnerPrices, PriceQuote, unpriced_reason


def _attempt(number: int = 1, **fields) -> Attempt:
    values = {
        "instance_id": f"i-{number}",
        "instance_type": "g5.xlarge",
        "lifecycle": "spot",
        "price_per_hour": 0.36,
        "on_demand_price_per_hour": 1.2,
        "launched_at": 1000.0,
        "ended_at": 1000.0 + 3600.0,
        **fields,
    }
    return Attempt(number=number, **values)


class ListedPrices:
    """A price source that knows `known` and records what it was asked."""

    def __init__(self, known: dict[str, float], why: str = "not listed") -> None:
        self.known, self.why = known, why
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def on_demand_prices(self, region: str, instance_types: Sequence[str]) -> PriceQuote:
        self.asked.append((region, tuple(instance_types)))
        return PriceQuote(
            prices={t: self.known[t] for t in instance_types if t in self.known},
            missing={t: self.why for t in instance_types if t not in self.known},
        )


# --------------------------------------------------------------------------- prices
def test_there_is_no_built_in_price_table_to_cost_other_regions_wrongly():
    assert not hasattr(prices, "ON_DEMAND_USD_PER_HOUR")
    assert not hasattr(prices, "on_demand_price")


def test_the_owners_price_wins_and_only_the_rest_is_asked_of_the_source():
    source = ListedPrices({"g5.xlarge": 1.006, "g6.xlarge": 0.8048})

    quote = OwnerPrices({"g5.xlarge": 1.5}, source).on_demand_prices(
        "eu-west-1", ["g5.xlarge", "g6.xlarge"]
    )

    assert quote.prices == {"g5.xlarge": 1.5, "g6.xlarge": 0.8048}
    assert source.asked == [("eu-west-1", ("g6.xlarge",))]


def test_a_type_nobody_prices_is_missing_with_the_sources_reason_not_zero():
    quote = OwnerPrices({}, ListedPrices({}, why="no product")).on_demand_prices(
        "us-east-1", ["x9.huge"]
    )

    assert quote.prices == {}
    assert quote.missing == {"x9.huge": "no product"}
    assert quote.priced(["x9.huge"]) == ()


def test_without_a_source_an_unpriced_type_says_the_owner_did_not_price_it():
    quote = OwnerPrices({"g5.xlarge": 1.0}).on_demand_prices("us-east-1", ["g5.xlarge", "g7.xl"])

    assert quote.priced(["g7.xl", "g5.xlarge"]) == ("g5.xlarge",)
    assert "DROPFLOW_ON_DEMAND_PRICES does not price it" in quote.missing["g7.xl"]


def test_the_unpriced_reason_names_the_types_why_and_how_to_price_them():
    reason = unpriced_reason({"g7.xlarge": "no product in eu-west-1"}, "eu-west-1")

    assert "no on-demand price in eu-west-1 for g7.xlarge" in reason
    assert "no product in eu-west-1" in reason
    assert "TrainingOnDemandPrices" in reason and "DROPFLOW_ON_DEMAND_PRICES" in reason
    assert '{"g7.xlarge": <USD per hour>}' in reason


def test_prices_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DROPFLOW_ON_DEMAND_PRICES", '{"g5.xlarge": 1.1}')
    monkeypatch.setenv("DROPFLOW_LOCAL_SPOT_PRICE", "0.25")
    monkeypatch.setenv("DROPFLOW_PRICE_LIST_TTL_SECONDS", "600")

    settings = pricing_settings()

    assert settings.on_demand_prices == {"g5.xlarge": 1.1}
    assert (settings.local_spot_price, settings.local_on_demand_price) == (0.25, 0.0)
    assert settings.price_list_ttl_seconds == 600.0


def test_an_empty_owner_price_parameter_means_no_owner_prices(monkeypatch):
    # A CloudFormation parameter cannot be absent: left at its default it is "".
    monkeypatch.setenv("DROPFLOW_ON_DEMAND_PRICES", "")

    assert pricing_settings().on_demand_prices == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"g5.xlarge": -1}', "greater than 0"),
        ('{"g5.xlarge": 0}', "greater than 0"),
    ],
)
def test_a_wrong_price_setting_names_the_variable(monkeypatch, value, message):
    monkeypatch.setenv("DROPFLOW_ON_DEMAND_PRICES", value)

    with pytest.raises(ConfigError, match="DROPFLOW_ON_DEMAND_PRICES") as caught:
        pricing_settings()
    assert message in str(caught.value)


# --------------------------------------------------------------------------- the ledger
def test_an_attempt_costs_its_price_times_the_hours_it_ran():
    book = ledger([_attempt(ended_at=1000.0 + 1800.0)], now=9999.0)

    (line,) = book.attempts
    assert line.seconds_run == 1800.0
    assert line.cost_usd == pytest.approx(0.18)
    assert line.on_demand_equivalent_usd == pytest.approx(0.6)


def test_the_job_totals_cost_savings_and_seconds_lost():
    attempts = [
        _attempt(1, seconds_lost=95.0),  # an hour of spot, reclaimed
        _attempt(2, lifecycle="on-demand", price_per_hour=1.2, launched_at=5000.0, ended_at=6800.0),
    ]

    book = ledger(attempts, now=9999.0)

    assert book.cost_usd == pytest.approx(0.36 + 0.6)
    assert book.on_demand_equivalent_usd == pytest.approx(1.2 + 0.6)
    assert book.savings_usd == pytest.approx(0.84)
    assert book.savings_percent == pytest.approx(46.7)
    assert book.seconds_lost == 95.0
    assert book.seconds_run == 5400.0


def test_an_unknown_price_makes_the_totals_unknown_not_zero():
    attempts = [_attempt(1), _attempt(2, price_per_hour=None, launched_at=5000.0, ended_at=5600.0)]

    book = ledger(attempts, now=9999.0)

    assert book.attempts[1].cost_usd is None
    assert book.cost_usd is None and book.savings_usd is None and book.savings_percent is None
    assert book.on_demand_equivalent_usd == pytest.approx(1.2 + 0.2)
    assert book.unpriced_attempts == 1
    assert book.to_dict()["cost_usd"] is None


def test_an_attempt_that_never_got_an_instance_cost_nothing():
    book = ledger([Attempt(number=1, started_at=1000.0, ended_at=1010.0)], now=2000.0)

    assert book.cost_usd == 0.0 and book.unpriced_attempts == 0


def test_a_running_attempt_accrues_until_now():
    running = _attempt(ended_at=None)

    assert seconds_run(running, now=1000.0 + 600.0) == 600.0
    assert ledger([running], now=1000.0 + 600.0).cost_usd == pytest.approx(0.06)


def test_billing_starts_at_the_launch_not_at_the_training_start():
    attempt = _attempt(launched_at=1000.0, started_at=1100.0, ended_at=1300.0)

    assert seconds_run(attempt, now=5000.0) == 300.0


def test_budget_spend_counts_an_unknown_spot_price_at_the_on_demand_price():
    attempts = [_attempt(1), _attempt(2, price_per_hour=None, launched_at=5000.0, ended_at=8600.0)]

    assert budget_spend(attempts, now=9999.0) == pytest.approx(0.36 + 1.2)


def test_budget_spend_of_an_attempt_that_ran_with_no_price_is_unknown_not_zero():
    unpriced = _attempt(
        2, price_per_hour=None, on_demand_price_per_hour=None, launched_at=5000.0, ended_at=5600.0
    )
    attempts = [_attempt(1), unpriced]

    assert budget_spend(attempts, now=9999.0) is None
    assert [a.number for a in unpriced_runs(attempts, now=9999.0)] == [2]


def test_an_attempt_without_an_instance_adds_nothing_to_the_budget_spend():
    never_ran = Attempt(number=2, started_at=5000.0, ended_at=5010.0)

    assert budget_spend([_attempt(1), never_ran], now=9999.0) == pytest.approx(0.36)


def test_amounts_read_as_dollars_or_unknown():
    assert describe_usd(None) == "unknown"
    assert describe_usd(1234.5) == "$1,234.50"
    assert describe_usd(0.0042) == "$0.0042"
    assert describe_usd(0.0) == "$0.00"
