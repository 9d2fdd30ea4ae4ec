"""The launcher starts one job per (model, data version) and one job at a time per model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from dropflow.control.launcher import Launcher, remaining_work_seconds
from dropflow.errors import InvalidName, UserInputError
from dropflow.ports import InstanceState, ObjectInfo
from dropflow.records.jobs import Attempt, Job, JobState, JobStore
from dropflow.vocabulary.datasets import data_version, model_of_dataset_key, models_with_data
from dropflow.vocabulary.spec import Spec, read_spec
from tests.fakes_compute import FakeCompute
from training.data import load_dataset

CSV = b"a,b,target\n1,2,0\n3,4,1\n"


@pytest.fixture
def compute() -> FakeCompute:
    return FakeCompute()


@pytest.fixture
def launcher(store, registry, compute) -> Launcher:
    return Launcher(store, registry, compute, max_attempts=3)


def test_a_drop_launches_one_job_with_its_first_attempt(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)

    outcome = launcher.request_training("iris")

    assert outcome.action == "launched"
    job = JobStore(launcher.registry).get(outcome.job_id)
    assert job.state == JobState.LAUNCHING
    assert [a.number for a in job.attempts] == [1]
    assert job.attempts[0].instance_id == "fake-1"
    assert compute.launches[0].job_id == job.job_id


def test_the_same_data_delivered_twice_is_claimed_once(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)

    first = launcher.request_training("iris")
    second = launcher.request_training("iris")

    assert (first.action, second.action) == ("launched", "duplicate")
    assert len(compute.launches) == 1


def test_100_concurrent_duplicate_events_launch_exactly_once(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda _: launcher.request_training("iris"), range(100)))

    assert len(compute.launches) == 1
    assert sum(o.action == "launched" for o in outcomes) == 1


def test_new_data_while_a_job_runs_is_coalesced_into_one_follow_up(store, launcher, compute):
    store.put("datasets/iris/a.csv", CSV)
    running = launcher.request_training("iris")
    store.put("datasets/iris/b.csv", CSV)
    store.put("datasets/iris/c.csv", CSV)

    second = launcher.request_training("iris")
    third = launcher.request_training("iris")

    assert second.action == third.action == "coalesced"
    assert second.job_id == running.job_id
    assert len(compute.launches) == 1
    assert launcher.release_slot("iris", running.job_id) is True  # a follow-up is owed
    assert launcher.request_training("iris", trigger="follow-up").action == "launched"


def test_a_prefix_without_data_files_starts_nothing(store, launcher, compute):
    store.put("datasets/iris/dropflow.yaml", b"target: y\n")

    outcome = launcher.request_training("iris")

    assert outcome.action == "no-data"
    assert "datasets/iris/" in outcome.message
    assert compute.launches == []


def test_a_folder_of_labelled_images_is_data_and_is_claimed_once(store, launcher, compute):
    store.put("datasets/digits/dropflow.yaml", b"family: image\n")
    store.put("datasets/digits/three/a.png", b"png bytes")
    store.put("datasets/digits/seven/b.JPG", b"jpeg bytes")

    first = launcher.request_training("digits")
    again = launcher.request_training("digits")

    assert first.action == "launched"
    assert again.action == "duplicate"
    assert len(compute.launches) == 1


def test_a_prefix_of_other_files_says_which_files_are_data(store, launcher, compute):
    store.put("datasets/digits/notes.txt", b"not data")

    outcome = launcher.request_training("digits")

    assert outcome.action == "no-data"
    assert outcome.message == (
        "no .csv or .parquet file under datasets/digits/ (nor an image: .jpg, .jpeg, .png, .webp)"
    )
    assert compute.launches == []


def test_an_invalid_model_name_is_rejected_with_the_rule():
    with pytest.raises(InvalidName, match="Iris_Data"):
        Launcher(None, None, None).request_training("Iris_Data")  # type: ignore[arg-type]


def test_a_launch_error_fails_the_job_with_the_reason_and_frees_the_model(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.fail_with = "InsufficientInstanceCapacity in every pool"

    outcome = launcher.request_training("iris")

    assert outcome.action == "failed"
    job = JobStore(launcher.registry).get(outcome.job_id)
    assert job.state == JobState.FAILED
    assert "InsufficientInstanceCapacity" in (job.reason or "")
    assert launcher.active_job("iris") is None


def test_data_version_changes_with_any_key_or_etag_and_not_with_order():
    a = ObjectInfo("datasets/m/a.csv", 1, "e1", 0.0)
    b = ObjectInfo("datasets/m/b.csv", 1, "e2", 0.0)

    assert data_version([a, b]) == data_version([b, a])
    assert data_version([a, b]) != data_version([a])
    assert data_version([a]) != data_version([ObjectInfo(a.key, 1, "other", 0.0)])


def test_dataset_keys_name_their_model():
    assert model_of_dataset_key("datasets/iris/2026/part-1.csv") == "iris"
    assert model_of_dataset_key("datasets/iris.csv") is None
    assert model_of_dataset_key("models/iris/v1/card.json") is None


def test_models_with_data_skips_invalid_names(store):
    store.put("datasets/iris/a.csv", CSV)
    store.put("datasets/Bad Name/a.csv", CSV)

    assert models_with_data(store) == ["iris"]


SPOT_FULL = ("capacity", "InsufficientInstanceCapacity in g5.xlarge/subnet-a, g6.xlarge/subnet-a")


def test_no_spot_capacity_anywhere_leads_to_an_on_demand_attempt(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.refuse["spot"] = SPOT_FULL

    outcome = launcher.request_training("iris")

    assert outcome.action == "launched"
    assert compute.tried == ["spot", "on-demand"]
    attempt = JobStore(launcher.registry).get(outcome.job_id).attempts[0]
    assert attempt.lifecycle == "on-demand"


def test_a_spot_quota_also_falls_back_to_on_demand(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.refuse["spot"] = ("quota", "MaxSpotInstanceCountExceeded")

    assert launcher.request_training("iris").action == "launched"
    assert compute.tried == ["spot", "on-demand"]


def test_with_on_demand_forbidden_the_job_fails_saying_why(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    store.put("datasets/iris/dropflow.yaml", b"compute:\n  on_demand: never\n")
    compute.refuse["spot"] = SPOT_FULL

    outcome = launcher.request_training("iris")

    assert outcome.action == "failed"
    assert compute.tried == ["spot"]
    reason = JobStore(launcher.registry).get(outcome.job_id).reason or ""
    assert "InsufficientInstanceCapacity" in reason
    assert "compute.on_demand: never" in reason


def test_a_request_error_does_not_fall_back(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.refuse["spot"] = ("config", "InvalidLaunchTemplateId.NotFound")

    assert launcher.request_training("iris").action == "failed"
    assert compute.tried == ["spot"]


def test_the_spec_can_ask_for_on_demand_only_and_name_instance_types(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    store.put(
        "datasets/iris/dropflow.yaml",
        b"compute:\n  on_demand: always\n  instance_types: [g6.xlarge]\n",
    )

    launcher.request_training("iris")

    assert compute.tried == ["on-demand"]
    assert tuple(compute.launches[0].instance_types) == ("g6.xlarge",)


def test_an_invalid_spec_fails_the_job_before_any_launch_with_the_training_jobs_message(
    store, launcher, compute
):
    store.put("datasets/iris/data.csv", CSV)
    store.put("datasets/iris/dropflow.yaml", b"compute: {on_demand: sometimes}\nepoch: 10\n")
    # What the training job itself reads the spec with (training/job.py), and would fail with.
    with pytest.raises(UserInputError) as raised:
        read_spec(store, "iris")

    outcome = launcher.request_training("iris")

    assert outcome.action == "failed"
    assert compute.tried == []  # no instance booted to find a typo
    job = launcher.jobs.get(outcome.job_id)
    assert job.state == JobState.FAILED and job.attempts == []
    assert job.reason == str(raised.value)
    assert "compute.on_demand" in job.reason and "epoch: unknown key" in job.reason
    assert launcher.active_job("iris") is None
    assert launcher.queue.state().running == {}


# --------------------------------------------------------------------------- the target
PENGUINS = (
    b"species,island,bill_length_mm,year\nAdelie,Torgersen,39.1,2007\nGentoo,Biscoe,46.1,2008\n"
)


def test_a_table_with_no_column_to_predict_fails_before_any_launch_listing_the_columns(
    store, launcher, compute
):
    # No spec, the label first and no column named like a target: nothing is guessed.
    store.put("datasets/penguins/data.csv", PENGUINS)
    # What the training job's own reader fails with on the same data.
    with pytest.raises(UserInputError) as raised:
        load_dataset(store, "penguins", Spec())

    outcome = launcher.request_training("penguins")

    assert outcome.action == "failed"
    assert compute.tried == []
    job = launcher.jobs.get(outcome.job_id)
    assert job.state == JobState.FAILED and job.attempts == []
    assert job.reason == str(raised.value)
    assert "available columns: species, island, bill_length_mm, year" in job.reason
    assert "`target: <column>`" in job.reason
    assert "datasets/penguins/dropflow.yaml" in job.reason
    assert launcher.active_job("penguins") is None
    assert launcher.queue.state().running == {}


def test_a_parquet_table_with_no_column_to_predict_fails_before_any_launch(
    store, launcher, compute
):
    frame = pd.DataFrame({"species": ["Adelie", "Gentoo"], "year": [2007, 2008]})
    store.put("datasets/penguins/data.parquet", frame.to_parquet(index=False))
    with pytest.raises(UserInputError) as raised:
        load_dataset(store, "penguins", Spec())

    outcome = launcher.request_training("penguins")

    assert outcome.action == "failed" and compute.tried == []
    assert outcome.message == str(raised.value)
    assert "available columns: species, year" in outcome.message


def test_a_parquet_table_with_a_label_column_launches(store, launcher, compute):
    frame = pd.DataFrame({"bill": [39.1, 46.1], "label": ["Adelie", "Gentoo"]})
    store.put("datasets/penguins/data.parquet", frame.to_parquet(index=False))

    assert launcher.request_training("penguins").action == "launched"


def test_a_column_named_label_in_any_case_is_taken_and_the_job_launches(store, launcher, compute):
    store.put("datasets/penguins/data.csv", b"Label,bill\nAdelie,39.1\nGentoo,46.1\n")

    assert launcher.request_training("penguins").action == "launched"


def test_the_spec_s_target_lets_the_same_table_launch(store, launcher, compute):
    store.put("datasets/penguins/data.csv", PENGUINS)
    store.put("datasets/penguins/dropflow.yaml", b"target: species\n")

    assert launcher.request_training("penguins").action == "launched"


def test_a_spec_target_that_is_not_a_column_fails_before_any_launch(store, launcher, compute):
    store.put("datasets/penguins/data.csv", PENGUINS)
    store.put("datasets/penguins/dropflow.yaml", b"target: sex\n")

    outcome = launcher.request_training("penguins")

    assert outcome.action == "failed" and compute.tried == []
    assert "'sex'" in outcome.message and "available columns: species, island" in outcome.message


def test_two_columns_named_like_a_target_fail_before_any_launch_naming_both(
    store, launcher, compute
):
    store.put("datasets/m/data.csv", b"Class,a,y\n0,1,1\n1,2,0\n")

    outcome = launcher.request_training("m")

    assert outcome.action == "failed" and compute.tried == []
    assert "'Class', 'y'" in outcome.message


# --------------------------------------------------------------------------- prices
def test_the_attempt_records_its_price_and_the_on_demand_equivalent(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)

    outcome = launcher.request_training("iris")

    attempt = JobStore(launcher.registry).get(outcome.job_id).attempts[0]
    assert (attempt.lifecycle, attempt.price_per_hour, attempt.on_demand_price_per_hour) == (
        "spot",
        0.3,
        1.0,
    )
    assert attempt.launched_at is not None and attempt.purchase_reason is None


def test_an_on_demand_fallback_records_why(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.refuse["spot"] = SPOT_FULL

    outcome = launcher.request_training("iris")

    attempt = JobStore(launcher.registry).get(outcome.job_id).attempts[0]
    assert attempt.price_per_hour == 1.0
    assert (attempt.purchase_reason or "").startswith("spot failed (capacity)")


# --------------------------------------------------------------------------- budget, deadline
HOUR = 3600.0


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _limited(store, registry, spec: str) -> tuple[Launcher, FakeCompute, Clock]:
    clock = Clock()
    compute = FakeCompute(clock=clock)
    store.put("datasets/iris/data.csv", CSV)
    store.put("datasets/iris/dropflow.yaml", spec.encode())
    return Launcher(store, registry, compute, clock=clock), compute, clock


def _ran_one_hour_and_was_lost(launcher: Launcher, compute: FakeCompute, clock: Clock) -> str:
    job_id = launcher.request_training("iris").job_id
    clock.now += HOUR
    compute.end("fake-1", None)
    launcher.jobs.update_attempt(job_id, 1, ended_at=clock.now, exit_reason="the instance ended")
    launcher.jobs.transition(job_id, JobState.INTERRUPTED)
    return job_id


def test_a_job_that_spent_its_budget_is_not_launched_again(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {budget_usd: 0.25}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)  # an hour at $0.30

    outcome = launcher.launch_attempt(job_id)

    assert outcome.action == "failed"
    assert len(compute.launches) == 1
    job = launcher.jobs.get(job_id)
    assert job.state == JobState.FAILED and len(job.attempts) == 1
    assert job.reason == (
        "attempt 2 not launched: the job has spent $0.30 of its budget of $0.25 "
        "(compute.budget_usd)"
    )
    assert launcher.active_job("iris") is None


def test_a_job_whose_spend_cannot_be_known_is_not_launched_again(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {budget_usd: 40}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)
    # An attempt on record without any price (one launched before prices were recorded).
    launcher.jobs.update_attempt(job_id, 1, price_per_hour=None, on_demand_price_per_hour=None)

    outcome = launcher.launch_attempt(job_id)

    assert outcome.action == "failed"
    assert len(compute.launches) == 1
    reason = launcher.jobs.get(job_id).reason or ""
    assert "cannot be known (attempt 1 on fake.large ran with no recorded price)" in reason
    assert "budget of $40.00 (compute.budget_usd)" in reason
    assert "TrainingOnDemandPrices" in reason


def test_without_a_budget_in_the_spec_an_unknown_spend_still_stops_the_job(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {max_attempts: 3}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)
    launcher.jobs.update_attempt(job_id, 1, price_per_hour=None, on_demand_price_per_hour=None)

    outcome = launcher.launch_attempt(job_id)

    assert outcome.action == "failed"
    assert "its budget of $10.00 (the stack's default budget, TrainingDefaultBudgetUSD" in (
        outcome.message
    )


def test_an_instance_that_comes_without_a_price_is_terminated_at_once(store, launcher, compute):
    store.put("datasets/iris/data.csv", CSV)
    compute.prices = {"spot": None, "on-demand": None}
    compute.on_demand_price = None

    outcome = launcher.request_training("iris")

    assert outcome.action == "failed"
    assert compute.instances["fake-1"].state == InstanceState.TERMINATED
    job = launcher.jobs.get(outcome.job_id)
    assert job.state == JobState.FAILED
    assert job.reason is not None and job.reason.startswith(
        "attempt 1: fake-1 (fake.large) came with no price"
    )
    assert "TrainingOnDemandPrices" in job.reason
    assert job.attempts[0].instance_id == "fake-1" and job.attempts[0].ended_at is not None
    assert launcher.queue.state().running == {}


def test_a_job_under_its_budget_is_launched_again(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {budget_usd: 0.5}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)

    assert launcher.launch_attempt(job_id).action == "launched"


def test_a_job_past_its_deadline_is_not_relaunched(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {deadline: 45m}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)

    outcome = launcher.launch_attempt(job_id)

    assert outcome.action == "failed"
    assert len(compute.launches) == 1
    reason = launcher.jobs.get(job_id).reason or ""
    assert reason.startswith("attempt 2 not launched: the deadline (45m, ")
    assert reason.endswith("has passed (compute.deadline)")


def test_a_job_past_its_max_runtime_is_not_relaunched(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {max_runtime: 30m}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)

    outcome = launcher.launch_attempt(job_id)

    assert outcome.action == "failed"
    assert "the max runtime is 30m (compute.max_runtime)" in outcome.message


def _with_progress(launcher: Launcher, job_id: str, **progress) -> None:
    launcher.jobs.set_progress(job_id, {"stage": "training", "attempt": 1, **progress})


def test_spot_is_used_while_the_deadline_leaves_room(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {deadline: 4h}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)
    _with_progress(launcher, job_id, step=500, steps=1000, eta_seconds=HOUR)

    launcher.launch_attempt(job_id)

    assert compute.tried == ["spot", "spot"]


def test_an_attempt_goes_on_demand_when_spot_can_no_longer_meet_the_deadline(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {deadline: 2h}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)
    # An hour of training left, an hour to go: no room for a spot reclaim and a restart.
    _with_progress(launcher, job_id, step=500, steps=1000, eta_seconds=HOUR)

    outcome = launcher.launch_attempt(job_id)

    assert outcome.action == "launched"
    assert compute.tried == ["spot", "on-demand"]
    attempt = launcher.jobs.get(job_id).attempts[1]
    assert attempt.lifecycle == "on-demand"
    assert (attempt.purchase_reason or "").startswith("the deadline (2h, ")
    assert "3600 s of training left" in (attempt.purchase_reason or "")


def test_with_on_demand_never_the_deadline_does_not_buy_on_demand(store, registry):
    launcher, compute, clock = _limited(
        store, registry, "compute: {deadline: 2h, on_demand: never}\n"
    )
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)
    _with_progress(launcher, job_id, step=500, steps=1000, eta_seconds=HOUR)

    launcher.launch_attempt(job_id)

    assert compute.tried == ["spot", "spot"]


def test_without_a_heartbeat_only_the_margin_decides(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {deadline: 65m}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)  # 5 minutes left

    launcher.launch_attempt(job_id)

    assert compute.tried == ["spot", "on-demand"]


def test_remaining_work_is_the_heartbeat_eta_or_extrapolated_from_the_steps_done():
    attempts = [Attempt(number=1, instance_id="i-1", launched_at=0.0, ended_at=1100.0)]
    attempts[0].seconds_lost = 100.0
    job = Job(job_id="iris-20261123T101500Z-3f9a0c", model="iris", data_version="d")
    job.attempts = attempts

    job.progress = {"step": 250, "steps": 1000, "eta_seconds": 1234}
    assert remaining_work_seconds(job) == 1234.0
    # 250 steps in 1000 useful seconds: 750 steps to go take 3000 s.
    job.progress = {"step": 250, "steps": 1000}
    assert remaining_work_seconds(job) == 3000.0
    job.progress = {"stage": "exporting", "step": 1000, "steps": 1000}
    assert remaining_work_seconds(job) == 0.0
    job.progress = {}
    assert remaining_work_seconds(job) is None


def test_when_on_demand_has_no_capacity_for_the_deadline_spot_is_the_last_resort(store, registry):
    launcher, compute, clock = _limited(store, registry, "compute: {deadline: 65m}\n")
    job_id = _ran_one_hour_and_was_lost(launcher, compute, clock)
    compute.refuse["on-demand"] = ("capacity", "InsufficientInstanceCapacity on-demand")

    outcome = launcher.launch_attempt(job_id)

    assert outcome.action == "launched"
    assert compute.tried == ["spot", "on-demand", "spot"]
    assert launcher.jobs.get(job_id).attempts[1].purchase_reason is None


def test_a_job_that_cannot_launch_still_starts_the_follow_up_it_owes(store, launcher, compute):
    store.put("datasets/iris/a.csv", CSV)
    running = launcher.request_training("iris")
    store.put("datasets/iris/b.csv", CSV)
    assert launcher.request_training("iris").action == "coalesced"
    launcher.jobs.transition(running.job_id, JobState.INTERRUPTED, reason="instance lost")
    compute.fail_with = "the launch template is gone"

    outcome = launcher.launch_attempt(running.job_id)

    assert outcome.action == "failed"
    (follow_up,) = [j for j in launcher.jobs.all() if j.job_id != running.job_id]
    assert follow_up.trigger == "follow-up"
    assert len(compute.tried) == 3  # the first launch, the failed resume, the follow-up


# --------------------------------------------------------------------------- the schedule
DAY = 86_400.0


@pytest.fixture
def scheduled(store, registry):
    clock = Clock()
    compute = FakeCompute(clock=clock)
    launcher = Launcher(store, registry, compute, clock=clock)
    store.put("datasets/iris/dropflow.yaml", b"schedule: {every: 1d}\n")
    store.put("datasets/iris/a.csv", CSV)
    return launcher, compute, clock


def _publish_and_free(launcher: Launcher, job_id: str) -> None:
    for state in (JobState.RUNNING, JobState.EXPORTING, JobState.PUBLISHED):
        launcher.jobs.transition(job_id, state)
    launcher.hand_over("iris", job_id)


def test_the_schedule_trains_a_scheduled_model_that_never_published(scheduled):
    launcher, _, _ = scheduled

    (outcome,) = launcher.scheduled_training()

    assert outcome.action == "launched"
    assert launcher.jobs.get(outcome.job_id).trigger == "schedule"


def test_the_schedule_skips_a_model_without_a_schedule_section(store, launcher, compute):
    store.put("datasets/wine/a.csv", CSV)

    (outcome,) = launcher.scheduled_training()

    assert outcome.action == "skipped"
    assert "no schedule in datasets/wine/dropflow.yaml" in outcome.message
    assert compute.launches == []


def test_the_schedule_skips_data_unchanged_since_the_last_published_job(scheduled, store):
    launcher, compute, clock = scheduled
    first = launcher.request_training("iris")
    _publish_and_free(launcher, first.job_id)
    clock.now += 3 * DAY

    (outcome,) = launcher.scheduled_training()

    assert outcome.action == "skipped"
    assert f"data unchanged since job {first.job_id}" in outcome.message
    assert len(compute.launches) == 1


def test_changed_data_waits_until_the_schedule_is_due(scheduled, store):
    launcher, _, clock = scheduled
    first = launcher.request_training("iris")
    _publish_and_free(launcher, first.job_id)
    # A file replaced in place (its drop event lost) changes the data version.
    store.put("datasets/iris/a.csv", CSV + b"5,6,1\n")
    clock.now += DAY / 2

    early = launcher.scheduled_training()[0]
    clock.now += DAY
    due = launcher.scheduled_training()[0]

    assert early.action == "skipped"
    assert "retrain due at" in early.message
    assert due.action == "launched"
    assert launcher.jobs.get(due.job_id).trigger == "schedule"


# --------------------------------------------------------------------------- the slot
@pytest.mark.parametrize(("age", "action"), [(10.0, "coalesced"), (400.0, "launched")])
def test_a_slot_whose_job_is_not_recorded_yet_is_held_only_for_a_grace(
    store, registry, age, action
):
    clock = Clock()
    launcher = Launcher(store, registry, FakeCompute(clock=clock), clock=clock)
    store.put("datasets/iris/a.csv", CSV)
    # Another request took the slot and has not written its job yet (or died doing so).
    registry.put_if_absent(
        "MODEL#iris",
        "ACTIVE",
        {"job_id": "iris-20261123T000000Z-abcdef", "follow_up": False, "taken_at": clock() - age},
    )

    assert launcher.request_training("iris").action == action
