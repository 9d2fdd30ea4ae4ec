"""The tracker relaunches lost attempts, stops at max attempts, and never retries user errors."""

from __future__ import annotations

import time

import pytest

from dropflow.control.launcher import Launcher
from dropflow.control.tracker import FINISHING_GRACE_SECONDS, Tracker
from dropflow.ports import InstanceState, LaunchRequest
from dropflow.records.jobs import ExitCode, JobState, bootstrap_failure_key
from tests.fakes_compute import FakeCompute

CSV = b"a,b,target\n1,2,0\n3,4,1\n"


@pytest.fixture
def compute() -> FakeCompute:
    return FakeCompute()


@pytest.fixture
def tracker(store, registry, compute) -> Tracker:
    store.put("datasets/iris/data.csv", CSV)
    return Tracker(Launcher(store, registry, compute, max_attempts=3))


def _start(tracker: Tracker) -> str:
    return tracker.launcher.request_training("iris").job_id


def test_an_instance_lost_mid_training_gets_a_new_attempt(tracker, compute):
    job_id = _start(tracker)
    tracker.jobs.transition(job_id, JobState.RUNNING)

    outcome = tracker.instance_ended(compute.end("fake-1", None))

    assert outcome.action == "relaunched"
    job = tracker.jobs.get(job_id)
    assert len(job.attempts) == 2
    assert job.attempts[0].exit_reason == "the instance ended"
    assert compute.launches[-1].attempt == 2


def test_after_max_attempts_the_job_fails_with_the_last_reason(tracker, compute):
    job_id = _start(tracker)
    for n in (1, 2, 3):
        outcome = tracker.instance_ended(compute.end(f"fake-{n}", ExitCode.CRASHED))

    assert outcome.action == "failed"
    job = tracker.jobs.get(job_id)
    assert job.state == JobState.FAILED
    assert "gave up after 3 failed attempts" in (job.reason or "")
    assert tracker.launcher.active_job("iris") is None


def test_a_user_error_is_not_retried(tracker, compute):
    job_id = _start(tracker)
    tracker.jobs.transition(
        job_id, JobState.FAILED, reason="data.csv row 3, column b: 'x' is not a number"
    )

    outcome = tracker.instance_ended(compute.end("fake-1", ExitCode.USER_ERROR))

    assert outcome.action == "finished"
    assert len(compute.launches) == 1
    assert tracker.jobs.get(job_id).reason.startswith("data.csv row 3")


def test_an_event_for_an_earlier_attempt_is_ignored(tracker, compute):
    job_id = _start(tracker)
    tracker.instance_ended(compute.end("fake-1", None))

    again = tracker.instance_ended(compute.instances["fake-1"])

    assert again.action == "ignored"
    assert len(tracker.jobs.get(job_id).attempts) == 2


def test_a_published_job_frees_the_model_and_starts_the_owed_follow_up(tracker, compute, store):
    job_id = _start(tracker)
    store.put("datasets/iris/more.csv", CSV)
    assert tracker.launcher.request_training("iris").action == "coalesced"
    for state in (JobState.RUNNING, JobState.EXPORTING):
        tracker.jobs.transition(job_id, state)
    tracker.jobs.transition(job_id, JobState.PUBLISHED, version="v20261123T101500Z-abcdef")

    outcome = tracker.instance_ended(compute.end("fake-1", ExitCode.OK))

    assert outcome.action == "finished"
    assert outcome.follow_up is not None and outcome.follow_up.action == "launched"
    assert len(compute.launches) == 2


def test_sweep_finds_ended_instances_whose_event_was_lost(tracker, compute):
    job_id = _start(tracker)
    compute.end("fake-1", None)

    outcomes = tracker.sweep()

    assert [o.action for o in outcomes] == ["relaunched"]
    assert len(tracker.jobs.get(job_id).attempts) == 2


def test_honoured_interruptions_do_not_use_up_the_attempts(tracker, compute):
    job_id = _start(tracker)
    for n in range(1, 6):
        tracker.jobs.update_attempt(job_id, n, exit_reason="interrupted: spot-interruption")
        outcome = tracker.instance_ended(compute.end(f"fake-{n}", ExitCode.INTERRUPTED))
        assert outcome.action == "relaunched"

    assert len(tracker.jobs.get(job_id).attempts) == 6
    assert tracker.jobs.get(job_id).state == JobState.LAUNCHING


def test_the_spec_sets_how_many_failed_attempts_a_job_gets(tracker, compute, store):
    store.put("datasets/iris/dropflow.yaml", b"compute:\n  max_attempts: 1\n")
    job_id = _start(tracker)

    outcome = tracker.instance_ended(compute.end("fake-1", ExitCode.CRASHED))

    assert outcome.action == "failed"
    assert "gave up after 1 failed attempts" in (tracker.jobs.get(job_id).reason or "")


def _published(tracker: Tracker) -> str:
    job_id = _start(tracker)
    for state in (JobState.RUNNING, JobState.EXPORTING):
        tracker.jobs.transition(job_id, state)
    tracker.jobs.transition(job_id, JobState.PUBLISHED, version="v20261123T101500Z-abcdef")
    return job_id


@pytest.fixture
def timed(store, registry) -> tuple[Tracker, FakeCompute, Clock]:
    """A tracker on a clock the test moves, starting now (job records are stamped with the
    wall clock)."""
    store.put("datasets/iris/data.csv", CSV)
    clock = Clock(time.time())
    compute = FakeCompute(clock=clock)
    return Tracker(Launcher(store, registry, compute, clock=clock), clock=clock), compute, clock


def test_the_watchdog_leaves_a_just_published_job_s_instance_to_finish(timed):
    tracker, compute, clock = timed
    _published(tracker)
    clock.now += FINISHING_GRACE_SECONDS / 2  # still recording its end and uploading its log

    outcomes = tracker.watchdog()

    assert "terminated" not in [o.action for o in outcomes]
    assert compute.instances["fake-1"].state == InstanceState.RUNNING


def test_the_watchdog_terminates_a_published_job_s_instance_still_there_after_the_grace(timed):
    tracker, compute, clock = timed
    job_id = _published(tracker)
    # The instance should have shut itself down after publishing, but is still running.
    clock.now += FINISHING_GRACE_SECONDS + 1

    outcomes = tracker.watchdog()

    assert [o.action for o in outcomes] == ["terminated"]
    assert f"(job {job_id}, attempt 1) serves no unfinished job" in outcomes[0].message
    assert compute.instances["fake-1"].state == InstanceState.TERMINATED


def test_the_watchdog_terminates_a_real_orphan_at_once(timed):
    tracker, compute, _ = timed
    _published(tracker)  # a finishing job beside it keeps its instance
    orphan = compute.launch(LaunchRequest(job_id="job-that-never-was", model="iris", attempt=1))

    outcomes = tracker.watchdog()

    assert [o.action for o in outcomes] == ["terminated"]
    assert f"orphan instance {orphan.instance_id}" in outcomes[0].message
    assert compute.instances[orphan.instance_id].state == InstanceState.TERMINATED
    assert compute.instances["fake-1"].state == InstanceState.RUNNING


def test_the_watchdog_terminates_an_earlier_attempt_s_instance_at_once(timed):
    tracker, compute, _ = timed
    job_id = _published(tracker)
    # An instance of the job that is not its current attempt serves nothing.
    stray = compute.launch(LaunchRequest(job_id=job_id, model="iris", attempt=7))

    outcomes = tracker.watchdog()

    assert [o.action for o in outcomes] == ["terminated"]
    assert compute.instances[stray.instance_id].state == InstanceState.TERMINATED


def test_the_watchdog_terminates_a_stuck_attempt_so_it_resumes_elsewhere(tracker, compute):
    job_id = _start(tracker)
    tracker.jobs.transition(job_id, JobState.RUNNING)
    tracker.jobs.set_progress(job_id, {"stage": "training", "updated_at": 0.0})

    outcomes = tracker.watchdog()
    assert [o.action for o in outcomes] == ["terminated"]
    assert "no heartbeat" in outcomes[0].message

    # The end of the instance is then handled like any lost attempt: a new one resumes.
    assert [o.action for o in tracker.sweep()] == ["relaunched"]
    assert len(tracker.jobs.get(job_id).attempts) == 2


def test_the_watchdog_leaves_a_healthy_attempt_alone(tracker, compute):
    job_id = _start(tracker)
    tracker.jobs.transition(job_id, JobState.RUNNING)
    tracker.jobs.set_progress(job_id, {"stage": "training", "updated_at": time.time()})

    assert tracker.watchdog() == []
    assert compute.instances["fake-1"].state == InstanceState.RUNNING


# --------------------------------------------------------------------------- budget
class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limited(store, registry, clock) -> Tracker:
    """A tracker whose jobs run at $0.30/hour (spot) under a budget of $0.50 and a max runtime
    of 3h, on a clock the test moves."""
    store.put("datasets/iris/data.csv", CSV)
    store.put("datasets/iris/dropflow.yaml", b"compute: {budget_usd: 0.5, max_runtime: 3h}\n")
    compute = FakeCompute(clock=clock)
    return Tracker(Launcher(store, registry, compute, clock=clock), clock=clock)


def _running(tracker: Tracker) -> str:
    job_id = _start(tracker)
    tracker.jobs.transition(job_id, JobState.RUNNING)
    tracker.jobs.set_progress(job_id, {"stage": "training", "updated_at": tracker.clock()})
    return job_id


def test_the_watchdog_stops_an_attempt_whose_cost_reaches_the_budget(limited, clock):
    job_id = _running(limited)
    clock.now += 2 * 3600  # two hours at $0.30: $0.60 of a $0.50 budget
    limited.jobs.set_progress(job_id, {"stage": "training", "updated_at": clock.now})

    outcomes = limited.watchdog()

    assert [o.action for o in outcomes] == ["failed"]
    assert limited.compute.instances["fake-1"].state == InstanceState.TERMINATED
    job = limited.jobs.get(job_id)
    assert job.state == JobState.FAILED
    assert job.reason == (
        "stopped attempt 1 on fake-1: the job has spent $0.60 of its budget of $0.50 "
        "(compute.budget_usd)"
    )
    assert job.attempts[0].ended_at == clock.now
    assert limited.launcher.active_job("iris") is None


def test_the_stopped_instance_ending_relaunches_nothing(limited, clock):
    job_id = _running(limited)
    clock.now += 2 * 3600
    limited.watchdog()

    outcome = limited.instance_ended(limited.compute.instances["fake-1"])

    assert outcome.action == "finished"
    assert len(limited.compute.launches) == 1
    assert len(limited.jobs.get(job_id).attempts) == 1


def test_the_watchdog_leaves_an_attempt_under_its_budget_alone(limited, clock):
    job_id = _running(limited)
    clock.now += 3600  # $0.30 of $0.50
    limited.jobs.set_progress(job_id, {"stage": "training", "updated_at": clock.now})

    assert limited.watchdog() == []
    assert limited.jobs.get(job_id).state == JobState.RUNNING


def test_the_budget_counts_the_attempts_before_the_running_one(limited, clock):
    job_id = _running(limited)
    clock.now += 3600
    limited.instance_ended(limited.compute.end("fake-1", None))  # $0.30 spent, relaunched
    limited.jobs.transition(job_id, JobState.RUNNING)
    clock.now += 2400  # and $0.20 on the second attempt
    limited.jobs.set_progress(job_id, {"stage": "training", "updated_at": clock.now})

    outcomes = limited.watchdog()

    assert [o.action for o in outcomes] == ["failed"]
    assert "spent $0.50 of its budget of $0.50" in outcomes[0].message
    assert limited.compute.instances["fake-2"].state == InstanceState.TERMINATED


def test_an_unknown_spot_price_is_budgeted_at_the_on_demand_price(limited, clock):
    limited.compute.prices["spot"] = None  # EC2 could not say; on-demand is $1.00
    job_id = _running(limited)
    clock.now += 1800

    outcomes = limited.watchdog()

    assert [o.action for o in outcomes] == ["failed"]
    assert "spent $0.50" in (limited.jobs.get(job_id).reason or "")


def test_a_lost_attempt_of_a_job_over_budget_is_not_relaunched(limited, clock):
    job_id = _running(limited)
    clock.now += 2 * 3600  # the instance ends before the watchdog comes by

    outcome = limited.instance_ended(limited.compute.end("fake-1", None))

    assert outcome.action == "failed"
    assert outcome.message.startswith("attempt 2 not launched: the job has spent $0.60")
    assert len(limited.compute.launches) == 1
    assert limited.jobs.get(job_id).state == JobState.FAILED


def test_the_watchdog_stops_a_job_at_its_max_runtime(limited, clock):
    limited.compute.prices["spot"] = 0.01  # cheap: the budget is not what stops it
    job_id = _running(limited)
    clock.now += 3 * 3600
    limited.jobs.set_progress(job_id, {"stage": "training", "updated_at": clock.now})

    outcomes = limited.watchdog()

    assert [o.action for o in outcomes] == ["failed"]
    assert "the max runtime is 3h (compute.max_runtime)" in outcomes[0].message


def test_the_watchdog_stops_a_running_attempt_whose_spend_cannot_be_known_without_a_spec_budget(
    store, registry, clock
):
    store.put("datasets/iris/data.csv", CSV)  # no spec: the stack's default budget holds
    tracker = Tracker(Launcher(store, registry, FakeCompute(clock=clock), clock=clock), clock=clock)
    job_id = _running(tracker)
    # An attempt on record without any price (recorded before prices were).
    tracker.jobs.update_attempt(job_id, 1, price_per_hour=None, on_demand_price_per_hour=None)
    clock.now += 60
    tracker.jobs.set_progress(job_id, {"stage": "training", "updated_at": clock.now})

    outcomes = tracker.watchdog()

    assert [o.action for o in outcomes] == ["failed"]
    assert tracker.compute.instances["fake-1"].state == InstanceState.TERMINATED
    reason = tracker.jobs.get(job_id).reason or ""
    assert "cannot be known (attempt 1 on fake.large ran with no recorded price)" in reason
    assert "budget of $10.00 (the stack's default budget, TrainingDefaultBudgetUSD" in reason


def test_a_deadline_does_not_stop_a_running_attempt(store, registry, clock):
    store.put("datasets/iris/data.csv", CSV)
    store.put("datasets/iris/dropflow.yaml", b"compute: {deadline: 1h}\n")
    tracker = Tracker(Launcher(store, registry, FakeCompute(clock=clock), clock=clock), clock=clock)
    job_id = _running(tracker)
    clock.now += 2 * 3600
    tracker.jobs.set_progress(job_id, {"stage": "training", "updated_at": clock.now})

    assert tracker.watchdog() == []

    outcome = tracker.instance_ended(tracker.compute.end("fake-1", None))
    assert outcome.action == "failed"
    assert "the deadline (1h, " in outcome.message


# --------------------------------------------------------------------------- counting ends
def test_the_call_that_fails_a_job_reports_it_ended_failed(tracker, compute):
    _start(tracker)
    for n in (1, 2):
        assert tracker.instance_ended(compute.end(f"fake-{n}", ExitCode.CRASHED)).ended is None

    outcome = tracker.instance_ended(compute.end("fake-3", ExitCode.CRASHED))

    assert (outcome.action, outcome.ended) == ("failed", "failed")


def test_a_job_the_training_failed_is_reported_ended_once_however_often_the_event_comes(
    tracker, compute
):
    job_id = _start(tracker)
    tracker.jobs.transition(job_id, JobState.FAILED, reason="target 'y' is not a column")
    ended = compute.end("fake-1", ExitCode.USER_ERROR)

    first = tracker.instance_ended(ended)
    again = tracker.instance_ended(ended)

    assert first.ended == "failed"
    assert again.ended is None


def test_a_relaunch_that_cannot_start_fails_the_job_and_says_so(tracker, compute):
    job_id = _start(tracker)
    compute.fail_with = "no launch template"

    outcome = tracker.instance_ended(compute.end("fake-1", ExitCode.CRASHED))

    assert (outcome.action, outcome.ended) == ("failed", "failed")
    assert tracker.jobs.get(job_id).state == JobState.FAILED


def test_a_relaunch_that_cannot_start_reports_the_follow_up_it_owed(tracker, compute, store):
    _start(tracker)
    store.put("datasets/iris/more.csv", CSV)  # a drop during the job: a follow-up is owed
    assert tracker.launcher.request_training("iris").action == "coalesced"
    compute.fail_with = "no launch template"

    outcome = tracker.instance_ended(compute.end("fake-1", ExitCode.CRASHED))

    assert (outcome.action, outcome.ended) == ("failed", "failed")
    assert outcome.follow_up is not None and outcome.follow_up.action == "failed"


def test_a_bootstrap_that_said_why_it_failed_fails_the_job_with_that_reason(
    tracker, compute, store
):
    # The training UserData writes this when a step before training fails (template.yaml).
    job_id = _start(tracker)
    why = (
        "this instance's subnet cannot reach dynamodb.us-east-1.amazonaws.com (HTTPS): each of "
        "TrainingSubnetIds needs a route to S3 and DynamoDB"
    )
    store.put(bootstrap_failure_key("iris", job_id, 1), why.encode() + b"\n")

    outcome = tracker.instance_ended(compute.end("fake-1", None))

    assert outcome.action == "failed"
    job = tracker.jobs.get(job_id)
    assert job.state == JobState.FAILED
    assert job.reason == f"attempt 1 failed before training: {why}"
    assert job.attempts[0].exit_reason == f"failed before training: {why}"
    assert len(compute.launches) == 1  # the same stack's next instance would fail alike


def test_an_instance_that_ended_before_training_with_no_word_is_retried_with_a_hint(
    tracker, compute
):
    job_id = _start(tracker)

    outcome = tracker.instance_ended(compute.end("fake-1", None))

    assert outcome.action == "relaunched"
    reason = tracker.jobs.get(job_id).attempts[0].exit_reason or ""
    assert reason.startswith("ended before training started and left no reason")
    assert "TrainingSubnetIds need S3 and DynamoDB" in reason
