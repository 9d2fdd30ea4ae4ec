"""The stack owner's limits on training, and what a spec's `compute` section may do within them.

Whoever can write under `datasets/` drives training, so what a job may cost is the stack
owner's to bound, not the data owner's (DESIGN.md, "Trust and limits"):

- **instance types**: the owner's allowlist (stack parameter TrainingInstanceTypes). A spec's
  `compute.instance_types` may only narrow it; a type outside it fails the job before any
  launch. The launching role's IAM policy carries the same list, so not even a bug in this code
  can launch another type.
- **budget**: every job has one. A spec's `compute.budget_usd` may set it up to the owner's
  maximum (TrainingMaxBudgetUSD); a spec without one gets the owner's default
  (TrainingDefaultBudgetUSD). There is no unbounded job.
- **jobs at once**: at most `max_concurrent_jobs` training jobs run across all models
  (TrainingMaxConcurrentJobs); the rest wait their turn (dropflow.records.training_queue).

`OwnerLimits.bound` checks a spec's compute section against them and gives the `JobCompute`
the launcher and the watchdog enforce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dropflow.errors import ConfigError, UserInputError

if TYPE_CHECKING:  # the configuration reads the defaults here: the predict function's cold
    # start has no use for the spec's YAML parser
    from dropflow.vocabulary.spec import ComputeSection

# Single-GPU types of several families and generations: more spot pools, fewer capacity
# errors. The default of the stack parameter TrainingInstanceTypes, and of the local runtime.
DEFAULT_INSTANCE_TYPES: tuple[str, ...] = (
    "g6.xlarge",
    "g5.xlarge",
    "g4dn.xlarge",
    "g6.2xlarge",
    "g5.2xlarge",
)
# About 12 hours on g6.xlarge on-demand: far more than a tabular job needs, far less than a
# forgotten p5 costs in an hour.
DEFAULT_BUDGET_USD = 10.0
DEFAULT_MAX_BUDGET_USD = 50.0
DEFAULT_MAX_CONCURRENT_JOBS = 4

# What the stack owner sets, named wherever a limit refuses something: (stack parameter,
# environment variable of the functions).
INSTANCE_TYPES_SETTING = ("TrainingInstanceTypes", "DROPFLOW_TRAINING_INSTANCE_TYPES")
DEFAULT_BUDGET_SETTING = ("TrainingDefaultBudgetUSD", "DROPFLOW_DEFAULT_BUDGET_USD")
MAX_BUDGET_SETTING = ("TrainingMaxBudgetUSD", "DROPFLOW_MAX_BUDGET_USD")
MAX_JOBS_SETTING = ("TrainingMaxConcurrentJobs", "DROPFLOW_MAX_CONCURRENT_JOBS")


def setting(names: tuple[str, str]) -> str:
    """`Parameter (VARIABLE)`: how a message names one of the owner's settings."""
    return f"{names[0]} ({names[1]})"


def _usd(value: float) -> str:
    return f"${value:,.2f}"


@dataclass(frozen=True)
class JobCompute:
    """What one job may use: its spec's compute section within the owner's limits.

    `instance_types` is the spec's list, or the whole allowlist; `budget_usd` is always set,
    and `budget_source` says where it came from, for messages ("compute.budget_usd", or the
    owner's default setting).
    """

    spec: ComputeSection
    instance_types: tuple[str, ...]
    budget_usd: float
    budget_source: str

    @property
    def on_demand(self) -> str:
        return self.spec.on_demand

    @property
    def max_attempts(self) -> int | None:
        return self.spec.max_attempts

    @property
    def deadline(self) -> str | None:
        return self.spec.deadline

    @property
    def max_runtime(self) -> str | None:
        return self.spec.max_runtime

    @property
    def max_runtime_seconds(self) -> float | None:
        return self.spec.max_runtime_seconds

    def deadline_at(self, created_at: float) -> float | None:
        """The deadline as epoch seconds for a job created at `created_at`; None if none."""
        return self.spec.deadline_at(created_at)


@dataclass(frozen=True)
class OwnerLimits:
    """The stack owner's limits (dropflow.config.LimitSettings reads them from the
    environment). Raises ConfigError, naming the setting, when they contradict each other."""

    instance_types: tuple[str, ...] = DEFAULT_INSTANCE_TYPES
    default_budget_usd: float = DEFAULT_BUDGET_USD
    max_budget_usd: float = DEFAULT_MAX_BUDGET_USD
    max_concurrent_jobs: int = DEFAULT_MAX_CONCURRENT_JOBS
    _allowed: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.instance_types:
            raise ConfigError(
                f"invalid configuration: {setting(INSTANCE_TYPES_SETTING)} allows no instance "
                "type; list at least one"
            )
        if not 0 < self.default_budget_usd <= self.max_budget_usd:
            raise ConfigError(
                f"invalid configuration: {setting(DEFAULT_BUDGET_SETTING)} is "
                f"{_usd(self.default_budget_usd)}; it must be more than $0 and at most "
                f"{setting(MAX_BUDGET_SETTING)}, {_usd(self.max_budget_usd)}"
            )
        if self.max_concurrent_jobs < 1:
            raise ConfigError(
                f"invalid configuration: {setting(MAX_JOBS_SETTING)} must be at least 1"
            )
        object.__setattr__(self, "instance_types", tuple(dict.fromkeys(self.instance_types)))
        object.__setattr__(self, "_allowed", frozenset(self.instance_types))

    def refused_types(self, instance_types: Sequence[str]) -> list[str]:
        """The types of `instance_types` outside the allowlist, in their order."""
        return [t for t in dict.fromkeys(instance_types) if t not in self._allowed]

    def bound(self, compute: ComputeSection, *, source: str) -> JobCompute:
        """The job's compute: `compute` (a spec's section, read from `source`) within these
        limits.

        Raises UserInputError naming `source`, the key, what was refused and what is allowed:
        an instance type outside the allowlist, or a budget above the maximum.
        """
        problems = []
        types = tuple(compute.instance_types or ())
        refused = self.refused_types(types)
        if refused:
            problems.append(
                f"{source}: compute.instance_types: {', '.join(refused)} "
                f"{'is' if len(refused) == 1 else 'are'} not allowed by this stack; allowed: "
                f"{', '.join(self.instance_types)} (the stack owner's "
                f"{setting(INSTANCE_TYPES_SETTING)}); name only allowed types, or leave the key "
                "out to use them all"
            )
        budget = compute.budget_usd
        if budget is not None and budget > self.max_budget_usd:
            problems.append(
                f"{source}: compute.budget_usd: {_usd(budget)} is above this stack's maximum of "
                f"{_usd(self.max_budget_usd)} per job (the stack owner's "
                f"{setting(MAX_BUDGET_SETTING)}); ask for at most that, or leave the key out for "
                f"the default of {_usd(self.default_budget_usd)}"
            )
        if problems:
            raise UserInputError("; ".join(problems))
        if budget is None:
            budget_source = f"the stack's default budget, {setting(DEFAULT_BUDGET_SETTING)}"
            budget = self.default_budget_usd
        else:
            budget_source = "compute.budget_usd"
        return JobCompute(
            spec=compute,
            instance_types=tuple(dict.fromkeys(types)) or self.instance_types,
            budget_usd=budget,
            budget_source=budget_source,
        )
