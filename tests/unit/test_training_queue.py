"""The cap on training jobs at once across models: the rest wait in line, first come first
served, and start as slots free; a relaunch keeps its slot; a slot left by a job that died is
recovered. On the real SQLite registry, with an in-memory Compute."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dropflow.control.launcher import Launcher
from dropflow.control.tracker import LAUNCH_GRACE_SECONDS, Tracker
from dropflow.ports import InstanceState
from dropflow.records.jobs import ExitCode, JobState
from dropflow.records.training_queue import TrainingQueue
from dropflow.vocabulary.limits import OwnerLimits
from tests.fakes_compute import FakeCompute

CSV = b"a,b,target\n1,2,0\n3,4,1\n"
MODELS = ["m1", "m2", "m3", "m4"]


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 0.001  # each reading a little later: creation times are in order
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def compute(clock) -> FakeCompute:
    return FakeCompute(clock=clock)


def _tracker(store, registry, compute, clock, cap: int) -> Tracker:
    for model in MODELS:
        store.put(f"datasets/{model}/data.csv", CSV)
    launcher = Launcher(
        store, registry, compute, clock=clock, limits=OwnerLimits(max_concurrent_jobs=cap)
    )
    return Tracker(launcher, clock=clock)


@pytest.fixture
def two(store, registry, compute, clock) -> Tracker:
    """Four models with data, at most two training jobs at once."""
    return _tracker(store, registry, compute, clock, cap=2)


def _publish(tracker: Tracker, job_id: str):
    for state in (JobState.RUNNING, JobState.EXPORTING):
        tracker.jobs.transition(job_id, state)
    tracker.jobs.transition(job_id, JobState.PUBLISHED, version="v20261123T101500Z-abcdef")
    instance_id = tracker.jobs.get(job_id).current_attempt.instance_id
    return tracker.instance_ended(tracker.compute.end(instance_id, ExitCode.OK))


def test_jobs_beyond_the_cap_are_queued_with_their_place_in_line(two, compute):
    outcomes = [two.launcher.request_training(m) for m in MODELS]

    assert [o.action for o in outcomes] == ["launched", "launched", "queued", "queued"]
    assert [r.model for r in compute.launches] == ["m1", "m2"]
    assert outcomes[2].message.startswith(f"job {outcomes[2].job_id} is number 1 in line: ")
    assert outcomes[3].message.startswith(f"job {outcomes[3].job_id} is number 2 in line: ")
    assert "at most 2 jobs train at once: TrainingMaxConcurrentJobs" in outcomes[3].message
    waiting = two.jobs.get(outcomes[3].job_id)
    assert (waiting.state, waiting.attempts) == (JobState.QUEUED, [])
    assert waiting.reason is not None and waiting.reason.startswith("waiting for a training slot")
    state = two.launcher.queue.state()
    assert set(state.running) == {outcomes[0].job_id, outcomes[1].job_id}
    assert [job for _, job in state.waiting] == [outcomes[2].job_id, outcomes[3].job_id]


def test_a_job_that_ends_starts_the_first_in_line(two, compute):
    first, _, third, fourth = (two.launcher.request_training(m) for m in MODELS)

    ended = _publish(two, first.job_id)

    assert ended.action == "finished" and ended.ended == "published"
    assert [o.job_id for o in ended.started] == [third.job_id]
    assert ended.started[0].action == "launched"
    assert [r.model for r in compute.launches] == ["m1", "m2", "m3"]
    assert two.jobs.get(fourth.job_id).state == JobState.QUEUED
    assert two.launcher.queue.state().position(fourth.job_id) == 1


def test_a_queued_job_with_an_invalid_spec_fails_without_a_launch_and_lets_the_next_start(
    store, registry, compute, clock
):
    tracker = _tracker(store, registry, compute, clock, cap=1)
    first = tracker.launcher.request_training("m1")
    store.put("datasets/m2/dropflow.yaml", b"training: {epochs: many}\n")
    broken = tracker.launcher.request_training("m2")
    third = tracker.launcher.request_training("m3")
    assert (broken.action, third.action) == ("queued", "queued")

    ended = _publish(tracker, first.job_id)

    assert [(o.job_id, o.action) for o in ended.started] == [
        (broken.job_id, "failed"),
        (third.job_id, "launched"),
    ]
    assert ended.jobs_failed() == 1  # the FailedJobsAlarm counts the spec's failure
    assert tracker.jobs.get(broken.job_id).reason == (
        "datasets/m2/dropflow.yaml: training.epochs: Input should be a valid integer"
    )
    assert [r.model for r in compute.launches] == ["m1", "m3"]


def test_a_launch_that_fails_frees_its_slot_for_the_next_in_line(two, compute):
    first, second, third, _ = (two.launcher.request_training(m) for m in MODELS)
    two.jobs.transition(first.job_id, JobState.RUNNING)
    compute.fail_with = "InvalidLaunchTemplateId.NotFound"

    # The first job's instance is lost; its relaunch cannot start, and neither can the next.
    lost = two.instance_ended(compute.end("fake-1", None))

    assert lost.action == "failed"
    assert [o.action for o in lost.started] == ["failed", "failed"]
    assert set(two.launcher.queue.state().running) == {second.job_id}
    assert two.jobs.get(third.job_id).state == JobState.FAILED


def test_an_interrupted_job_keeps_its_slot_when_it_is_relaunched(two, compute):
    first, second, third, fourth = (two.launcher.request_training(m) for m in MODELS)
    two.jobs.transition(first.job_id, JobState.RUNNING)
    two.jobs.update_attempt(first.job_id, 1, exit_reason="interrupted: spot-interruption")

    outcome = two.instance_ended(compute.end("fake-1", ExitCode.INTERRUPTED))

    assert outcome.action == "relaunched" and outcome.started == ()
    assert [(r.model, r.attempt) for r in compute.launches] == [("m1", 1), ("m2", 1), ("m1", 2)]
    state = two.launcher.queue.state()
    assert set(state.running) == {first.job_id, second.job_id}
    assert [job for _, job in state.waiting] == [third.job_id, fourth.job_id]


def test_the_sweep_recovers_the_slot_of_a_job_that_ended_without_freeing_it(two, compute):
    first, _, third, _ = (two.launcher.request_training(m) for m in MODELS)
    # The training job failed itself, and the event of its instance's end was lost.
    two.jobs.transition(first.job_id, JobState.FAILED, reason="data.csv: no rows")
    compute.end("fake-1", ExitCode.USER_ERROR)

    outcomes = two.sweep()

    assert two.launcher.queue.state().holds(third.job_id)
    assert [r.model for r in compute.launches] == ["m1", "m2", "m3"]
    assert any(o.ended == "failed" for o in outcomes)


def test_a_published_job_holds_its_slot_until_its_instance_has_ended(
    store, registry, compute, clock
):
    tracker = _tracker(store, registry, compute, clock, cap=1)
    first = tracker.launcher.request_training("m1")
    second = tracker.launcher.request_training("m2")
    for state in (JobState.RUNNING, JobState.EXPORTING, JobState.PUBLISHED):
        tracker.jobs.transition(first.job_id, state)  # its process is still finishing

    assert tracker.sweep() == []
    assert tracker.launcher.queue.state().holds(first.job_id)
    assert len(compute.launches) == 1

    ended = tracker.instance_ended(compute.end("fake-1", ExitCode.OK))

    assert [o.job_id for o in ended.started] == [second.job_id]
    assert len(compute.launches) == 2


def test_a_job_that_ended_while_it_waited_is_taken_out_of_line_not_launched(
    store, registry, compute, clock
):
    tracker = _tracker(store, registry, compute, clock, cap=1)
    first = tracker.launcher.request_training("m1")
    second = tracker.launcher.request_training("m2")
    third = tracker.launcher.request_training("m3")
    tracker.jobs.transition(second.job_id, JobState.FAILED, reason="failed by hand")

    ended = _publish(tracker, first.job_id)

    assert [o.job_id for o in ended.started] == [third.job_id]
    assert [r.model for r in compute.launches] == ["m1", "m3"]
    state = tracker.launcher.queue.state()
    assert list(state.running) == [third.job_id] and state.waiting == []


def test_the_sweep_drops_a_slot_whose_job_does_not_exist_and_starts_the_next(
    store, registry, compute, clock
):
    tracker = _tracker(store, registry, compute, clock, cap=3)
    tracker.launcher.request_training("m1")
    tracker.launcher.request_training("m2")
    # A slot held by a job with no record (one deleted by hand, say).
    ghost = "m9-20261123T101500Z-abcdef"
    tracker.launcher.queue.enqueue(ghost, 0.0)
    assert tracker.launcher.queue.fill(3) == [ghost]
    third = tracker.launcher.request_training("m3")
    assert third.action == "queued"

    outcomes = tracker.sweep()

    assert ("recovered", ghost) in [(o.action, o.job_id) for o in outcomes]
    assert tracker.launcher.queue.state().holds(third.job_id)
    assert [r.model for r in compute.launches] == ["m1", "m2", "m3"]


def test_a_job_given_a_slot_by_a_caller_that_died_is_launched_after_the_grace(two, compute, clock):
    _, _, third, _ = (two.launcher.request_training(m) for m in MODELS)
    for job_id in list(two.launcher.queue.state().running)[:1]:
        two.launcher.queue.release(job_id)
    # A caller took the free slot for the third job and died before launching it.
    assert two.launcher.queue.fill(2) == [third.job_id]

    assert two.sweep() == []
    assert len(compute.launches) == 2

    clock.now += LAUNCH_GRACE_SECONDS + 1
    (outcome,) = two.sweep()

    assert (outcome.action, outcome.job_id) == ("relaunched", third.job_id)
    assert [r.model for r in compute.launches] == ["m1", "m2", "m3"]


def test_the_queue_is_first_come_first_served_by_creation_time(registry):
    queue = TrainingQueue(registry)
    queue.enqueue("m2-20261123T101501Z-000002", 2.0)
    queue.enqueue("m1-20261123T101500Z-000001", 1.0)  # its enqueue came late: it goes first
    queue.enqueue("m2-20261123T101501Z-000002", 2.0)  # twice is once

    assert queue.fill(1) == ["m1-20261123T101500Z-000001"]
    assert queue.fill(1) == []
    assert queue.state().position("m2-20261123T101501Z-000002") == 1
    assert queue.enqueue("m1-20261123T101500Z-000001", 1.0) is None  # it holds a slot


def test_many_concurrent_requests_never_start_more_jobs_than_the_cap(
    store, registry, compute, clock
):
    models = [f"model-{n:02d}" for n in range(12)]
    for model in models:
        store.put(f"datasets/{model}/data.csv", CSV)
    launcher = Launcher(store, registry, compute, limits=OwnerLimits(max_concurrent_jobs=3))
    tracker = Tracker(launcher)
    alive: set[str] = set()
    most = [0]
    lock = threading.Lock()
    launch, end = compute.launch, compute.end

    def counting_launch(request):
        instance = launch(request)
        with lock:
            alive.add(instance.instance_id)
            most[0] = max(most[0], len(alive))
        return instance

    def counting_end(instance_id, exit_code):
        with lock:
            alive.discard(instance_id)
        return end(instance_id, exit_code)

    compute.launch, compute.end = counting_launch, counting_end
    start = threading.Barrier(len(models))

    def drop(model: str):
        start.wait(timeout=60)
        return launcher.request_training(model)

    with ThreadPoolExecutor(max_workers=len(models)) as pool:
        outcomes = list(pool.map(drop, models))

    # Each job launched by the one call that gave it its slot: its own, or one that drained.
    launched = [o.job_id for top in outcomes for o in (top, *top.started) if o.action == "launched"]
    assert len(launched) == len(set(launched)) == 3
    assert {o.action for o in outcomes} <= {"launched", "queued"}
    # Then every running job publishes, from threads at once, until all have trained.
    for _ in range(len(models)):
        running = [i for i in compute.instances.values() if i.state == InstanceState.RUNNING]
        if not running:
            break
        with ThreadPoolExecutor(max_workers=len(running)) as pool:
            list(pool.map(lambda i: _publish(tracker, i.job_id), running))

    assert most[0] == 3
    assert sorted(r.model for r in compute.launches) == models
    assert {j.state for j in tracker.jobs.all()} == {JobState.PUBLISHED}
    assert launcher.queue.state().running == {} and launcher.queue.state().waiting == []
