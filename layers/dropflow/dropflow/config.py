"""Typed configuration, read once from the environment and validated.

Adapters are chosen by URL scheme, never by `if local:` branches in domain code:
  DROPFLOW_STORE_URL     file:///abs/dir | s3://bucket[/prefix]
  DROPFLOW_REGISTRY_URL  sqlite:///abs/file.db | dynamodb://table
  DROPFLOW_COMPUTE_URL   process:///abs/dir | ec2://<launch-template-id>

Each field of a settings model is read from DROPFLOW_<FIELD NAME IN CAPITALS>; a mapping is
given as JSON. The models are plain pydantic models read by `_validated`: pydantic-settings
would do the same for this handful of variables, and importing it costs ~30 ms of every
cold start (the predict function's is what a client waits for).
"""

from __future__ import annotations

import json
import os
import typing
from functools import lru_cache
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dropflow.errors import ConfigError
from dropflow.promotion.retention import DEFAULT_KEEP
from dropflow.serving.forwarding import DEFAULT_RETRY_AFTER, DEFAULT_TIMEOUT
from dropflow.vocabulary.limits import (
    DEFAULT_BUDGET_USD,
    DEFAULT_INSTANCE_TYPES,
    DEFAULT_MAX_BUDGET_USD,
    DEFAULT_MAX_CONCURRENT_JOBS,
    OwnerLimits,
)
from dropflow.vocabulary.routing import (
    DEFAULT_FUNCTION_MEMORY_MB,
    DEFAULT_MAX_MODEL_MB,
    SESSION_MEMORY_FACTOR,
    Route,
)

PREFIX = "DROPFLOW_"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_url: str = Field(pattern=r"^(file|s3)://.+")
    registry_url: str = Field(pattern=r"^(sqlite|dynamodb)://.+")
    compute_url: str = Field(default="", pattern=r"^((process|ec2)://.+)?$")
    # How long the predict function trusts its cached champion pointer.
    champion_ttl_seconds: float = Field(default=5.0, ge=0, le=3600)
    # Attempts per job before it is failed (a spec may lower it).
    max_attempts: int = Field(default=3, ge=1, le=20)
    # How long an idempotency claim on (model, data version) is kept.
    claim_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    # Serving (dropflow.vocabulary.routing, dropflow.serving.service, dropflow.serving.forwarding):
    # what this process is: the predict function ("lambda") or the container tier.
    served_by: Route = "lambda"
    # Memory for cached onnxruntime sessions (MB); default: the function's memory less the
    # runtime's (AWS_LAMBDA_FUNCTION_MEMORY_SIZE), or 80% of the machine's elsewhere.
    model_cache_mb: float | None = Field(default=None, gt=0)
    # A version is served by the predict function when its model.onnx is at most this size and
    # its estimated session memory fits lambda_memory_mb; else by the container tier.
    lambda_max_model_mb: float = Field(default=DEFAULT_MAX_MODEL_MB, ge=0)
    lambda_memory_mb: int = Field(default=DEFAULT_FUNCTION_MEMORY_MB, ge=128, le=10240)
    session_memory_factor: float = Field(default=SESSION_MEMORY_FACTOR, ge=1.0, le=20.0)
    # The container tier: where the predict function forwards to (http://...), and what the
    # promotion asks for capacity (asg://<group name> | process:///dir; empty: no tier).
    container_url: str = Field(default="", pattern=r"^(https?://.+)?$")
    container_tier_url: str = Field(default="", pattern=r"^((asg|process)://.+)?$")
    container_timeout_seconds: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=900)
    container_retry_after_seconds: int = Field(default=DEFAULT_RETRY_AFTER, ge=1, le=3600)
    # Retention (dropflow.promotion.retention): approved versions kept besides the champion, so that
    # `dropflow models rollback` has something to go back to; older and rejected versions are
    # retired, and on S3 their files age out by the bucket's lifecycle rule.
    keep_versions: int = Field(default=DEFAULT_KEEP, ge=0, le=100)


_S = TypeVar("_S", bound=BaseModel)


class PricingSettings(BaseModel):
    """Prices for launches and the cost ledger; every variable optional. Kept apart from
    Settings so that a compute adapter can read them without the store and registry URLs.

      DROPFLOW_ON_DEMAND_PRICES        JSON {"g6.xlarge": 0.8048, ...}: the stack owner's
                                       on-demand USD/hour per type (stack parameter
                                       TrainingOnDemandPrices), used before the Price List
                                       API; empty means none. A type priced by neither is
                                       not launched (dropflow.vocabulary.prices).
      DROPFLOW_PRICE_LIST_TTL_SECONDS  how long a process keeps a Price List API price
                                       (default 6 h)
      DROPFLOW_LOCAL_SPOT_PRICE        what a local (process) spot attempt is said to cost per
      DROPFLOW_LOCAL_ON_DEMAND_PRICE   hour, and on-demand: simulated prices for demos and
                                       tests of the ledger (default 0.0, local runs are free)
    """

    model_config = ConfigDict(extra="forbid")

    # > 0: an on-demand GPU hour is never free, and a 0 would switch the budget off.
    on_demand_prices: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    price_list_ttl_seconds: float = Field(default=6 * 3600.0, ge=60, le=7 * 24 * 3600)
    local_spot_price: float = Field(default=0.0, ge=0)
    local_on_demand_price: float = Field(default=0.0, ge=0)


class LimitSettings(BaseModel):
    """The stack owner's limits on training (dropflow.vocabulary.limits), every variable
    optional; each is a stack parameter of the same meaning.

      DROPFLOW_TRAINING_INSTANCE_TYPES  comma list: the instance types training may use, which a
                                        spec may only narrow (TrainingInstanceTypes)
      DROPFLOW_DEFAULT_BUDGET_USD       a job's budget when its spec sets none
                                        (TrainingDefaultBudgetUSD)
      DROPFLOW_MAX_BUDGET_USD           the most a spec's compute.budget_usd may ask for
                                        (TrainingMaxBudgetUSD)
      DROPFLOW_MAX_CONCURRENT_JOBS      training jobs running at once across all models; the
                                        rest wait in turn (TrainingMaxConcurrentJobs)
    """

    model_config = ConfigDict(extra="forbid")

    training_instance_types: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        default=DEFAULT_INSTANCE_TYPES, min_length=1
    )
    default_budget_usd: float = Field(default=DEFAULT_BUDGET_USD, gt=0)
    max_budget_usd: float = Field(default=DEFAULT_MAX_BUDGET_USD, gt=0)
    max_concurrent_jobs: int = Field(default=DEFAULT_MAX_CONCURRENT_JOBS, ge=1, le=1000)

    def limits(self) -> OwnerLimits:
        """These settings as the limits the launcher enforces; ConfigError when the default
        budget is above the maximum."""
        return OwnerLimits(
            instance_types=self.training_instance_types,
            default_budget_usd=self.default_budget_usd,
            max_budget_usd=self.max_budget_usd,
            max_concurrent_jobs=self.max_concurrent_jobs,
        )


def _validated(kind: type[_S]) -> _S:
    """`kind` from the environment; a ConfigError names each missing or wrong variable."""
    values: dict[str, Any] = {}
    for name, field in kind.model_fields.items():
        var = PREFIX + name.upper()
        raw = os.environ.get(var)
        if raw is None:
            continue
        if typing.get_origin(field.annotation) is tuple:
            # A comma list, as CloudFormation joins a CommaDelimitedList parameter.
            items = [item.strip() for item in raw.split(",") if item.strip()]
            if items:
                values[name] = items
            continue  # empty: the default
        if typing.get_origin(field.annotation) is dict:
            if not raw.strip():
                continue  # a stack parameter left empty: no entries
            try:
                values[name] = json.loads(raw)
            except ValueError:
                raise ConfigError(f"invalid configuration: {var}: not valid JSON") from None
        else:
            values[name] = raw
    try:
        return kind.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            var = PREFIX + str(err["loc"][0]).upper() if err["loc"] else PREFIX + "*"
            problems.append(f"{var}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def load_settings() -> Settings:
    """Settings from the environment; a ConfigError names each missing or wrong variable."""
    return _validated(Settings)


def pricing_settings() -> PricingSettings:
    """The price settings from the environment, read when a compute adapter is created (once
    per execution environment); a ConfigError names each wrong variable."""
    return _validated(PricingSettings)


def limit_settings() -> LimitSettings:
    """The stack owner's limits from the environment, read when the launcher and the EC2
    compute are created (once per execution environment); a ConfigError names each wrong
    variable."""
    return _validated(LimitSettings)


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once (at cold start in a Lambda)."""
    return load_settings()
