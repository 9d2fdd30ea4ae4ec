"""The training handlers count failed jobs once each, as the metric the FailedJobsAlarm watches."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from dropflow.control.launcher import LaunchOutcome
from dropflow.control.tracker import TrackOutcome
from tests.fakes_serving import load_handler

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def track(adapters) -> ModuleType:
    app = load_handler(ROOT / "functions" / "track_training" / "app.py")
    app.metrics.clear_metrics()
    yield app
    app.metrics.clear_metrics()


def jobs_failed(app: ModuleType) -> float:
    entry = app.metrics.metric_set.get("JobsFailed")
    return sum(entry["Value"]) if entry else 0


def test_the_outcome_that_ended_a_job_failed_counts_one(track):
    track.record(TrackOutcome("finished", "job failed", "iris-1", ended="failed"))

    assert jobs_failed(track) == 1


def test_a_duplicate_event_for_an_ended_job_counts_nothing(track):
    track.record(TrackOutcome("finished", "job failed", "iris-1", ended=None))
    track.record(TrackOutcome("finished", "job published", "iris-2", ended="published"))

    assert jobs_failed(track) == 0


def test_a_follow_up_that_could_not_start_counts_too(track):
    follow_up = LaunchOutcome("failed", "iris", "attempt 1 could not start", "iris-3")

    track.record(TrackOutcome("finished", "job published", "iris-2", follow_up, "published"))

    assert jobs_failed(track) == 1


def test_a_failed_relaunch_and_its_failed_follow_up_count_two(track):
    follow_up = LaunchOutcome("failed", "iris", "attempt 1 could not start", "iris-3")

    track.record(TrackOutcome("failed", "could not relaunch", "iris-2", follow_up, "failed"))

    assert jobs_failed(track) == 2


def test_a_launch_outcome_counts_its_follow_ups_failures_too():
    follow_up = LaunchOutcome("failed", "iris", "attempt 1 could not start", "iris-3")

    assert LaunchOutcome("failed", "iris", "no capacity", "iris-2").jobs_failed() == 1
    assert LaunchOutcome("failed", "iris", "x", "iris-2", follow_up=follow_up).jobs_failed() == 2
    assert LaunchOutcome("launched", "iris", "ok", "iris-2").jobs_failed() == 0
