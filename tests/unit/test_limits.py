"""The stack owner's limits: a spec may narrow the instance types and lower the budget, never
widen or raise them, and every job has a budget. Checked where the launch happens, before any
instance is asked for."""

from __future__ import annotations

import pytest

from dropflow.config import limit_settings
from dropflow.control.launcher import Launcher
from dropflow.errors import ConfigError, UserInputError
from dropflow.records.jobs import JobState
from dropflow.vocabulary.limits import DEFAULT_INSTANCE_TYPES, OwnerLimits
from dropflow.vocabulary.spec import load_spec
from tests.fakes_compute import FakeCompute

CSV = b"a,b,target\n1,2,0\n3,4,1\n"
OWNER = OwnerLimits(
    instance_types=("g6.xlarge", "g5.xlarge", "g4dn.xlarge"),
    default_budget_usd=5.0,
    max_budget_usd=20.0,
)
SOURCE = "datasets/iris/dropflow.yaml"


def _bound(text: str, limits: OwnerLimits = OWNER):
    return limits.bound(load_spec(text).compute, source=SOURCE)


# --------------------------------------------------------------------------- the rules
def test_a_spec_may_narrow_the_allowed_types_in_its_own_order():
    assert _bound("compute: {instance_types: [g4dn.xlarge, g6.xlarge]}").instance_types == (
        "g4dn.xlarge",
        "g6.xlarge",
    )


def test_without_instance_types_a_job_may_use_the_whole_allowlist():
    assert _bound("").instance_types == ("g6.xlarge", "g5.xlarge", "g4dn.xlarge")


def test_a_type_outside_the_allowlist_is_refused_naming_the_key_the_types_and_the_allowed():
    with pytest.raises(UserInputError) as refused:
        _bound("compute: {instance_types: [p5.48xlarge, g6.xlarge, u-24tb1.112xlarge]}")

    assert str(refused.value) == (
        f"{SOURCE}: compute.instance_types: p5.48xlarge, u-24tb1.112xlarge are not allowed "
        "by this stack; allowed: g6.xlarge, g5.xlarge, g4dn.xlarge (the stack owner's "
        "TrainingInstanceTypes (DROPFLOW_TRAINING_INSTANCE_TYPES)); name only allowed types, "
        "or leave the key out to use them all"
    )


def test_a_budget_above_the_maximum_is_refused_naming_the_key_and_the_maximum():
    with pytest.raises(UserInputError) as refused:
        _bound("compute: {budget_usd: 500}")

    assert str(refused.value) == (
        f"{SOURCE}: compute.budget_usd: $500.00 is above this stack's maximum of $20.00 per "
        "job (the stack owner's TrainingMaxBudgetUSD (DROPFLOW_MAX_BUDGET_USD)); ask for at "
        "most that, or leave the key out for the default of $5.00"
    )


def test_both_problems_are_named_at_once():
    with pytest.raises(UserInputError) as refused:
        _bound("compute: {instance_types: [p5.48xlarge], budget_usd: 21}")

    assert "compute.instance_types: p5.48xlarge is not allowed" in str(refused.value)
    assert "compute.budget_usd: $21.00 is above" in str(refused.value)


def test_a_spec_may_lower_the_budget_up_to_the_maximum():
    assert (_bound("compute: {budget_usd: 1.5}").budget_usd, _bound("").budget_usd) == (1.5, 5.0)
    assert _bound("compute: {budget_usd: 20}").budget_source == "compute.budget_usd"


def test_a_job_without_a_budget_gets_the_stacks_default_and_says_so():
    compute = _bound("compute: {on_demand: never}")

    assert compute.budget_usd == 5.0
    assert compute.budget_source == (
        "the stack's default budget, TrainingDefaultBudgetUSD (DROPFLOW_DEFAULT_BUDGET_USD)"
    )
    assert compute.on_demand == "never"


def test_a_default_budget_above_the_maximum_is_a_configuration_error():
    with pytest.raises(ConfigError, match=r"TrainingDefaultBudgetUSD .* is \$60\.00; .* \$50\.00"):
        OwnerLimits(default_budget_usd=60.0, max_budget_usd=50.0)


# --------------------------------------------------------------------------- configuration
def test_the_limits_are_read_from_their_variables(monkeypatch):
    monkeypatch.setenv("DROPFLOW_TRAINING_INSTANCE_TYPES", "g6.xlarge, g5.xlarge,")
    monkeypatch.setenv("DROPFLOW_DEFAULT_BUDGET_USD", "2.5")
    monkeypatch.setenv("DROPFLOW_MAX_BUDGET_USD", "8")
    monkeypatch.setenv("DROPFLOW_MAX_CONCURRENT_JOBS", "3")

    limits = limit_settings().limits()

    assert limits == OwnerLimits(("g6.xlarge", "g5.xlarge"), 2.5, 8.0, 3)


def test_unset_or_empty_limits_take_the_stacks_defaults(monkeypatch):
    for name in ("DEFAULT_BUDGET_USD", "MAX_BUDGET_USD", "MAX_CONCURRENT_JOBS"):
        monkeypatch.delenv(f"DROPFLOW_{name}", raising=False)
    monkeypatch.setenv("DROPFLOW_TRAINING_INSTANCE_TYPES", "")

    limits = limit_settings().limits()

    assert limits.instance_types == DEFAULT_INSTANCE_TYPES
    assert (limits.default_budget_usd, limits.max_budget_usd) == (10.0, 50.0)
    assert limits.max_concurrent_jobs == 4


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DROPFLOW_MAX_CONCURRENT_JOBS", "0", "DROPFLOW_MAX_CONCURRENT_JOBS: Input should be"),
        ("DROPFLOW_MAX_BUDGET_USD", "-1", "DROPFLOW_MAX_BUDGET_USD: Input should be greater"),
        ("DROPFLOW_DEFAULT_BUDGET_USD", "free", "DROPFLOW_DEFAULT_BUDGET_USD: Input should be"),
    ],
)
def test_a_wrong_limit_variable_is_named(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=message):
        limit_settings()


# --------------------------------------------------------------------------- at the launch
@pytest.fixture
def compute() -> FakeCompute:
    return FakeCompute()


@pytest.fixture
def launcher(store, registry, compute) -> Launcher:
    store.put("datasets/iris/data.csv", CSV)
    return Launcher(store, registry, compute, limits=OWNER)


def test_a_spec_naming_a_type_outside_the_allowlist_fails_before_any_launch(
    store, launcher, compute
):
    store.put(SOURCE, b"compute: {instance_types: [p5.48xlarge, u-24tb1.112xlarge]}\n")

    outcome = launcher.request_training("iris")

    assert outcome.action == "failed"
    assert compute.tried == []
    job = launcher.jobs.get(outcome.job_id)
    assert job.state == JobState.FAILED
    assert job.reason is not None and job.reason.startswith(
        f"{SOURCE}: compute.instance_types: p5.48xlarge, u-24tb1.112xlarge are not allowed"
    )
    assert "allowed: g6.xlarge, g5.xlarge, g4dn.xlarge" in job.reason
    assert launcher.active_job("iris") is None


def test_the_launch_asks_for_exactly_the_types_the_limits_allow(store, launcher, compute):
    first = launcher.request_training("iris").job_id  # no spec: the whole allowlist
    for state in (JobState.RUNNING, JobState.EXPORTING, JobState.PUBLISHED):
        launcher.jobs.transition(first, state)
    launcher.hand_over("iris", first)
    store.put(SOURCE, b"compute: {instance_types: [g5.xlarge]}\n")  # a new data version

    launcher.request_training("iris")

    assert [tuple(r.instance_types) for r in compute.launches] == [
        ("g6.xlarge", "g5.xlarge", "g4dn.xlarge"),
        ("g5.xlarge",),
    ]


def test_a_spec_asking_for_more_than_the_maximum_budget_fails_before_any_launch(
    store, launcher, compute
):
    store.put(SOURCE, b"compute: {budget_usd: 1000}\n")

    outcome = launcher.request_training("iris")

    assert outcome.action == "failed"
    assert compute.tried == []
    assert "compute.budget_usd: $1,000.00 is above this stack's maximum of $20.00" in (
        outcome.message
    )


def test_the_default_budget_stops_a_job_whose_spec_sets_none(store, registry):
    clock = [1_800_000_000.0]
    compute = FakeCompute(clock=lambda: clock[0])
    store.put("datasets/iris/data.csv", CSV)
    limits = OwnerLimits(default_budget_usd=0.25, max_budget_usd=1.0)
    launcher = Launcher(store, registry, compute, clock=lambda: clock[0], limits=limits)
    job_id = launcher.request_training("iris").job_id
    clock[0] += 3600  # an hour at $0.30
    compute.end("fake-1", None)
    launcher.jobs.update_attempt(job_id, 1, ended_at=clock[0], exit_reason="the instance ended")
    launcher.jobs.transition(job_id, JobState.INTERRUPTED)

    outcome = launcher.launch_attempt(job_id)

    assert outcome.action == "failed"
    assert outcome.message == (
        "attempt 2 not launched: the job has spent $0.30 of its budget of $0.25 (the stack's "
        "default budget, TrainingDefaultBudgetUSD (DROPFLOW_DEFAULT_BUDGET_USD))"
    )
