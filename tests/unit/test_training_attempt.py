"""The bookkeeping around a training attempt: work lost, heartbeats, the job log, stopping."""

from __future__ import annotations

import json
import logging
import signal
import threading

import pytest

from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.adapters.local.sqlite_registry import SqliteRegistry
from dropflow.records.jobs import Attempt, Job, JobState, JobStore
from training.curve import training_curve
from training.heartbeat import Heartbeat
from training.job import seconds_lost
from training.joblog import AttemptLog
from training.loop import Progress
from training.reading import ReadProgress
from training.stop import StopRequest

JOB = "iris-20260101T000000Z-abcdef"


@pytest.fixture
def jobs(tmp_path) -> JobStore:
    jobs = JobStore(SqliteRegistry(tmp_path / "registry.db"))
    jobs.create(
        Job(
            job_id=JOB,
            model="iris",
            data_version="d",
            state=JobState.RUNNING,
            attempts=[Attempt(number=1)],
        )
    )
    return jobs


@pytest.fixture
def store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "bucket")


# --------------------------------------------------------------------------- seconds lost
def test_an_attempt_that_checkpointed_on_its_notice_lost_the_time_after_that_checkpoint():
    previous = Attempt(number=1, started_at=100.0, ended_at=250.4)
    assert seconds_lost(previous, {"attempt": 1, "saved_at": 250.0}, now=300.0) == (
        pytest.approx(0.4)
    )


def test_an_attempt_that_wrote_no_checkpoint_lost_all_its_running_time():
    previous = Attempt(number=2, started_at=100.0, ended_at=160.0)
    # The checkpoint the next attempt resumes from was written by attempt 1.
    assert seconds_lost(previous, {"attempt": 1, "saved_at": 90.0}, now=300.0) == 60.0
    assert seconds_lost(previous, None, now=300.0) == 60.0


def test_an_attempt_with_no_recorded_end_is_counted_until_now():
    previous = Attempt(number=1, started_at=100.0)
    assert seconds_lost(previous, None, now=130.0) == 30.0
    assert seconds_lost(Attempt(number=1), None, now=130.0) == 0.0  # it never started


# --------------------------------------------------------------------------- heartbeat
def test_a_heartbeat_goes_to_the_store_and_the_job_record(store, jobs):
    beat = Heartbeat(store, jobs, jobs.get(JOB), 2, clock=lambda: 1234.0)
    beat.stage("training")
    beat.progress(
        Progress(
            epoch=3,
            epochs=60,
            step=30,
            steps=600,
            loss=0.25,
            samples_per_second=1000.04,
            eta_seconds=12.6,
        )
    )
    expected = {
        "epoch": 3,
        "epochs": 60,
        "step": 30,
        "steps": 600,
        "loss": 0.25,
        "samples_per_second": 1000.0,
        "eta_seconds": 13,
        "stage": "training",
        "attempt": 2,
        "updated_at": 1234.0,
    }
    assert json.loads(store.get(f"jobs/iris/{JOB}/heartbeat.json")) == expected
    assert jobs.get(JOB).progress == expected


def test_while_loading_the_heartbeat_shows_rows_read_and_the_time_left_of_the_read(store, jobs):
    beat = Heartbeat(store, jobs, jobs.get(JOB), 1, clock=lambda: 1234.0)
    beat.stage("loading")

    beat.loading(ReadProgress(rows=250_000, fraction=0.4, seconds=8.0))

    expected = {
        "rows_read": 250_000,
        "read_fraction": 0.4,
        "load_eta_seconds": 12,
        "stage": "loading",
        "attempt": 1,
        "updated_at": 1234.0,
    }
    assert json.loads(store.get(f"jobs/iris/{JOB}/heartbeat.json")) == expected
    assert jobs.get(JOB).progress == expected
    # The launcher reads eta_seconds as the training left: a read's time left is not that.
    assert "eta_seconds" not in jobs.get(JOB).progress


def test_the_read_figures_go_when_training_starts(store, jobs):
    beat = Heartbeat(store, jobs, jobs.get(JOB), 1, clock=lambda: 1234.0)
    beat.stage("loading")
    beat.loading(ReadProgress(rows=10, fraction=0.5, seconds=1.0))

    beat.stage("training")

    assert jobs.get(JOB).progress == {"stage": "training", "attempt": 1, "updated_at": 1234.0}


def test_a_heartbeat_keeps_the_notice_the_tracker_recorded_for_this_attempt(store, jobs):
    beat = Heartbeat(store, jobs, jobs.get(JOB), 1, clock=lambda: 1000.0)
    jobs.set_progress(JOB, {"notice": "spot-interruption", "notice_at": 1001.0})
    beat.stage("training")
    assert jobs.get(JOB).progress["notice"] == "spot-interruption"


def test_a_heartbeat_that_cannot_be_written_does_not_stop_the_job(jobs, caplog):
    class Unreachable:
        def put(self, *args, **kwargs):
            raise ConnectionError("bucket unreachable")

    with caplog.at_level(logging.WARNING, logger="training.heartbeat"):
        Heartbeat(Unreachable(), jobs, jobs.get(JOB), 1).stage("loading")  # type: ignore[arg-type]
    assert "heartbeat not written: ConnectionError" in caplog.text


# --------------------------------------------------------------------------- job log
def test_each_attempt_appends_its_section_to_the_job_log(store):
    for attempt, outcome in ((1, "interrupted: spot-interruption"), (2, "published v1")):
        with AttemptLog(store, "iris", JOB, attempt) as attempt_log:
            logging.getLogger("training.job").info("hello from attempt %d", attempt)
        attempt_log.upload(outcome)
    text = store.get(f"jobs/iris/{JOB}/log.txt").decode()
    first, second = text.index("===== attempt 1,"), text.index("===== attempt 2,")
    assert first < text.index("hello from attempt 1") < second < text.index("hello from attempt 2")
    assert "attempt 1 ended" in text and ": interrupted: spot-interruption =====" in text
    assert text.rstrip().endswith(": published v1 =====")


# --------------------------------------------------------------------------- stopping
def test_a_notice_from_the_watcher_stops_and_names_its_kind():
    class Watcher:
        event = threading.Event()
        notice = None

        def start(self): ...
        def stop(self): ...

    watcher = Watcher()
    request = StopRequest(watcher=watcher)  # type: ignore[arg-type]
    assert not request()
    watcher.notice = type("Notice", (), {"kind": "rebalance-recommendation", "detail": "x"})()
    watcher.event.set()
    assert request() and request.reason == "rebalance-recommendation"


def test_an_external_event_stops_with_a_plain_reason():
    event = threading.Event()
    request = StopRequest(event)
    event.set()
    assert request() and request.reason == "stop requested"


def test_sigterm_asks_to_stop_and_the_handler_is_restored_after():
    before = signal.getsignal(signal.SIGTERM)
    request = StopRequest()
    with request.signals():
        signal.raise_signal(signal.SIGTERM)  # handled before the next line runs
        assert request() and request.reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before


# --------------------------------------------------------------------------- curve
def test_the_training_curve_is_a_png():
    png = training_curve([0.7, 0.4, 0.2], [0.8, 0.9, 0.95], "accuracy", title="iris")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert training_curve([0.5], [], "rmse").startswith(b"\x89PNG")
