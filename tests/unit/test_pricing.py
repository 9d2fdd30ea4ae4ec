"""The cost ledger: cost, on-demand equivalent, savings and seconds lost, unknown kept unknown."""

from __future__ import annotations

import pytest

from dropflow.config import pricing_settings
from dropflow.errors import ConfigError
from dropflow.records.jobs import Attempt
from dropflow.records.ledger import budget_spend, describe_usd, ledger, seconds_run
from dropflow.vocabulary.prices import ON_DEMAND_USD_PER_HOUR, on_demand_price


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


# --------------------------------------------------------------------------- prices
@pytest.mark.parametrize(
    "instance_type", ["g6.xlarge", "g5.xlarge", "g4dn.xlarge", "g6.2xlarge", "g5.2xlarge"]
)
def test_every_default_training_type_has_an_on_demand_price(instance_type):
    assert ON_DEMAND_USD_PER_HOUR[instance_type] > 0


def test_an_override_replaces_or_extends_the_table():
    overrides = {"g5.xlarge": 1.5, "g7.xlarge": 2.0}

    assert on_demand_price("g5.xlarge", overrides) == 1.5
    assert on_demand_price("g7.xlarge", overrides) == 2.0
    assert on_demand_price("g4dn.xlarge", overrides) == ON_DEMAND_USD_PER_HOUR["g4dn.xlarge"]


def test_an_unknown_type_has_no_price():
    assert on_demand_price("x9.huge") is None


def test_prices_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DROPFLOW_ON_DEMAND_PRICES", '{"g5.xlarge": 1.1}')
    monkeypatch.setenv("DROPFLOW_LOCAL_SPOT_PRICE", "0.25")

    settings = pricing_settings()

    assert settings.on_demand_prices == {"g5.xlarge": 1.1}
    assert (settings.local_spot_price, settings.local_on_demand_price) == (0.25, 0.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [("not json", "not valid JSON"), ('{"g5.xlarge": -1}', "greater than or equal to 0")],
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


def test_amounts_read_as_dollars_or_unknown():
    assert describe_usd(None) == "unknown"
    assert describe_usd(1234.5) == "$1,234.50"
    assert describe_usd(0.0042) == "$0.0042"
    assert describe_usd(0.0) == "$0.00"
