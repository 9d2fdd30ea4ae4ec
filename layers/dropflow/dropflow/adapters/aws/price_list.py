"""On-demand prices from the AWS Price List Query API (boto3 `pricing`, GetProducts).

The Query API is served from a few regions only (api.pricing.us-east-1, .eu-central-1 and
.ap-south-1 for the aws partition), whichever region the prices are for: this adapter asks
us-east-1, and filters the products by the `regionCode` of the stack's region. One
GetProducts per instance type, ServiceCode AmazonEC2, TERM_MATCH on

    regionCode, instanceType, operatingSystem=Linux, tenancy=Shared, preInstalledSw=NA,
    capacitystatus=Used, licenseModel="No License required"

which leaves the one Linux on-demand product of that type; each PriceList item is a JSON
string whose terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD is the hourly price.

Prices are cached per process (a Lambda execution environment) for `ttl_seconds`, so a warm
function asks once a few hours at most; a miss or an error is not cached, so the next launch
asks again. Nothing here ever answers $0 for a price it could not learn: a type without a
product, with an unreadable price, or asked while the API failed (AccessDenied, throttling,
no network) is *missing*, with the reason, and dropflow.vocabulary.prices says what to do.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dropflow.observability import logger
from dropflow.vocabulary.prices import PriceQuote

# The Price List Query API endpoint this adapter uses for the aws partition.
ENDPOINT_REGION = "us-east-1"
DEFAULT_TTL_SECONDS = 6 * 3600.0
# Partitions whose regions the aws-partition Price List does not price in USD.
_OTHER_PARTITIONS = ("cn-", "us-gov-", "us-iso", "eu-isoe-", "eusc-")
_FIXED_FILTERS = (
    ("operatingSystem", "Linux"),
    ("tenancy", "Shared"),
    ("preInstalledSw", "NA"),
    ("capacitystatus", "Used"),
    ("licenseModel", "No License required"),
)
_MAX_PAGES = 5  # the filters leave one product; a few pages bound a surprising answer
# Short timeouts: a launching function (60 s) without a route to the endpoint must learn it
# in seconds, not spend its time in botocore's default 60 s connect timeout and retries.
_CLIENT_CONFIG = Config(
    connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}
)


def product_filters(region: str, instance_type: str) -> list[dict[str, str]]:
    """The GetProducts filters of the Linux on-demand product of `instance_type` in `region`."""
    pairs = [("regionCode", region), ("instanceType", instance_type), *_FIXED_FILTERS]
    return [{"Type": "TERM_MATCH", "Field": name, "Value": value} for name, value in pairs]


def hourly_usd(price_list: Iterable[str]) -> float | None:
    """The hourly USD on-demand price in GetProducts' PriceList items (JSON strings); None when
    there is none. Several different prices (which the filters should rule out) give the
    highest, so that a budget is never underestimated."""
    found: list[float] = []
    for item in price_list:
        try:
            product = json.loads(item) if isinstance(item, str) else item
            terms = product.get("terms", {}).get("OnDemand", {})
        except (ValueError, AttributeError):
            continue
        for term in terms.values() if isinstance(terms, dict) else ():
            for dimension in (term.get("priceDimensions") or {}).values():
                unit = str(dimension.get("unit", "Hrs"))
                usd = (dimension.get("pricePerUnit") or {}).get("USD")
                if usd is None or not unit.lower().startswith("hr"):
                    continue
                try:
                    found.append(float(usd))
                except ValueError:
                    continue
    return max(found) if found else None


class PriceListPrices:
    """An OnDemandPriceSource backed by the Price List Query API, cached per process.

    `client` is a boto3 `pricing` client (tests pass a stubbed one); by default one for
    ENDPOINT_REGION is created on first use. `clock` (monotonic seconds) ages the cache.
    """

    def __init__(
        self,
        *,
        client: Any = None,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("PriceListPrices needs a positive cache lifetime (ttl_seconds)")
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._client = client
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, float]] = {}  # -> (price, expires)

    def __repr__(self) -> str:
        return f"PriceListPrices(ttl_seconds={self.ttl_seconds!r})"

    @property
    def client(self) -> Any:
        """The boto3 pricing client, created once on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = boto3.client(
                        "pricing", region_name=ENDPOINT_REGION, config=_CLIENT_CONFIG
                    )
        return self._client

    def on_demand_prices(self, region: str, instance_types: Sequence[str]) -> PriceQuote:
        """The on-demand Linux prices of `instance_types` in `region`; each type it cannot
        price is in `missing` with the reason (the API error, or no product)."""
        wanted = list(dict.fromkeys(instance_types))
        if not region:
            why = "the region to price is unknown (the EC2 client has no region)"
            return PriceQuote(missing=dict.fromkeys(wanted, why))
        if region.startswith(_OTHER_PARTITIONS):
            why = f"the Price List API in {ENDPOINT_REGION} does not price {region} in USD"
            return PriceQuote(missing=dict.fromkeys(wanted, why))
        prices: dict[str, float] = {}
        missing: dict[str, str] = {}
        failure: str | None = None
        for instance_type in wanted:
            cached = self._cached(region, instance_type)
            if cached is not None:
                prices[instance_type] = cached
                continue
            if failure is not None:  # the API already failed: the same call would too
                missing[instance_type] = failure
                continue
            try:
                price = self._ask(region, instance_type)
            except (ClientError, BotoCoreError) as exc:
                failure = f"the Price List API failed: {_describe(exc)}"
                logger.warning(
                    "Price List API failed; types it did not price are not launched",
                    extra={"region": region, "instance_type": instance_type, "error": failure},
                )
                missing[instance_type] = failure
                continue
            if price is None:
                missing[instance_type] = (
                    f"the Price List API has no Linux on-demand product for {instance_type} "
                    f"in {region}"
                )
            elif price <= 0:
                missing[instance_type] = (
                    f"the Price List API answered ${price} per hour for {instance_type} in "
                    f"{region}, which is not an on-demand price"
                )
            else:
                self._remember(region, instance_type, price)
                prices[instance_type] = price
        return PriceQuote(prices=prices, missing=missing)

    # ------------------------------------------------------------------ internals
    def _ask(self, region: str, instance_type: str) -> float | None:
        params: dict[str, Any] = {
            "ServiceCode": "AmazonEC2",
            "Filters": product_filters(region, instance_type),
            "FormatVersion": "aws_v1",
            "MaxResults": 10,
        }
        items: list[str] = []
        for _ in range(_MAX_PAGES):
            answer = self.client.get_products(**params)
            items.extend(answer.get("PriceList") or [])
            token = answer.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
        return hourly_usd(items)

    def _cached(self, region: str, instance_type: str) -> float | None:
        with self._lock:
            entry = self._cache.get((region, instance_type))
        if entry is None or self.clock() >= entry[1]:
            return None
        return entry[0]

    def _remember(self, region: str, instance_type: str, price: float) -> None:
        with self._lock:
            self._cache[(region, instance_type)] = (price, self.clock() + self.ttl_seconds)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        message = error.get("Message", "")
        return f"{code}: {message}" if message else str(code)
    return str(exc)
