"""Instance prices: on-demand USD per instance-hour, for the cost ledger and the EC2 adapter."""

from __future__ import annotations

from collections.abc import Mapping

# On-demand Linux list prices in us-east-1, USD per hour, as AWS published them in 2025.
# Other regions cost more or less, and list prices change: DROPFLOW_ON_DEMAND_PRICES (a JSON
# object, e.g. {"g6.xlarge": 0.91}) overrides or extends this table. The first five are the
# default training types.
ON_DEMAND_USD_PER_HOUR: Mapping[str, float] = {
    "g6.xlarge": 0.8048,
    "g5.xlarge": 1.006,
    "g4dn.xlarge": 0.526,
    "g6.2xlarge": 0.9776,
    "g5.2xlarge": 1.212,
    "g6.4xlarge": 1.3232,
    "g5.4xlarge": 1.624,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g6e.xlarge": 1.861,
    "g6e.2xlarge": 2.24208,
    "g5.12xlarge": 5.672,
    "g4dn.12xlarge": 3.912,
    "p3.2xlarge": 3.06,
    "p3.8xlarge": 12.24,
}


def on_demand_price(
    instance_type: str, overrides: Mapping[str, float] | None = None
) -> float | None:
    """The on-demand USD/hour of `instance_type`: `overrides` first, then the table; None when
    neither knows the type."""
    if overrides and instance_type in overrides:
        return float(overrides[instance_type])
    return ON_DEMAND_USD_PER_HOUR.get(instance_type)
