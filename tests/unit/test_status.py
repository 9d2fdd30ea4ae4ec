"""`dropflow status` shows each job's state and, while it runs, its heartbeat."""

from __future__ import annotations

import json

import pytest

from dropflow import wiring
from dropflow.records.catalog import Catalog
from dropflow_dev.status import (
    collect,
    describe_cost,
    describe_progress,
    render,
    render_model,
    resumes,
)


def test_progress_reads_as_one_line():
    line = describe_progress(
        {
            "stage": "training",
            "epoch": 12,
            "epochs": 60,
            "loss": 0.1234567,
            "samples_per_second": 45210.4,
            "eta_seconds": 35.2,
        }
    )

    assert line == "training epoch 12/60 loss 0.1235 45,210 samples/s ETA 35s"


def test_loading_progress_reads_as_rows_read_the_share_done_and_the_time_left():
    line = describe_progress(
        {"stage": "loading", "rows_read": 420_000, "read_fraction": 0.352, "load_eta_seconds": 22}
    )

    assert line == "loading 420,000 rows read (35%) ETA 22s"


def test_no_heartbeat_yet_is_an_empty_progress():
    assert describe_progress({}) == ""


def _report(state: str, **job):
    return {
        "jobs": [
            {
                "job_id": "iris-20261123T101500Z-3f9a0c",
                "model": "iris",
                "state": state,
                "attempts": 2,
                "version": None,
                "reason": None,
                "progress": {},
                "created_at": 0.0,
                **job,
            }
        ],
        "models": [],
    }


def test_a_running_job_shows_its_progress():
    report = _report("running", progress={"stage": "training", "epoch": 3, "epochs": 9})

    row = render(report, width=200).splitlines()[2]

    assert row.startswith("iris-20261123T101500Z-3f9a0c  iris   running")
    assert row.endswith("training epoch 3/9")


def test_a_failed_job_shows_its_reason():
    text = render(_report("failed", reason="data.csv line 3, column 'b': 'x' is not a number"))

    assert "failed" in text
    assert "data.csv line 3, column 'b'" in text
    assert "(no models yet)" in text


LONG_REASON = (
    "datasets/iris/part-2.csv, line 151: 3 fields, the header has 5; the file may have been cut "
    "off mid-upload: upload it again"
) * 2  # longer than any column width


def test_with_wide_a_failed_job_s_reason_is_shown_whole():
    text = render(_report("failed", reason=LONG_REASON), wide=True)

    assert LONG_REASON in text


def test_status_of_one_model_shows_a_failed_job_s_reason_whole():
    text = render_model(_report("failed", reason=LONG_REASON), "iris")

    assert f"  reason      {LONG_REASON}" in text.splitlines()


@pytest.mark.parametrize("width", [80, 200])
def test_the_table_fits_the_terminal_and_a_long_reason_ends_with_an_ellipsis(width):
    text = render(_report("failed", reason=LONG_REASON), width=width)

    assert max(len(line) for line in text.splitlines()) <= width
    row = text.splitlines()[2]
    assert row.startswith("iris-20261123T101500Z-3f9a0c")  # the job id is never cut
    assert row.endswith("…")
    assert LONG_REASON[: width // 4] in row  # the reason's start, cut at a column edge


def test_a_narrow_terminal_leaves_out_the_age_before_cutting_the_reason_short():
    wide_row, narrow_row = (
        render(_report("failed", reason=LONG_REASON), width=w).splitlines()[1] for w in (200, 80)
    )

    assert "CREATED" in wide_row
    assert "CREATED" not in narrow_row and "MODEL" in narrow_row


def test_the_width_comes_from_columns_where_there_is_no_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    report = _report("failed", reason=LONG_REASON)

    assert render(report) == render(report, width=80)


def test_a_published_version_that_promotion_rejected_says_why_in_full():
    reason = "would break the clients of the champion v1: " + "feature 'x' is gone; " * 10
    report = _report("published", version="v2", decision="rejected", decision_reason=reason)

    text = render(report, wide=True)

    assert f"v2 rejected: {reason.rstrip()}" in text


def test_an_approved_version_shows_just_the_version():
    row = render(_report("published", version="v2", decision="approved", decision_reason="ok"))

    assert row.splitlines()[2].endswith("  v2")


def _ledger(**totals):
    return {
        "attempts": [],
        "seconds_run": 7200.0,
        "cost_usd": 0.42,
        "on_demand_equivalent_usd": 1.38,
        "savings_usd": 0.96,
        "savings_percent": 69.6,
        "seconds_lost": 65.0,
        "unpriced_attempts": 0,
        **totals,
    }


def test_a_job_shows_its_cost_savings_resumes_and_seconds_lost():
    text = render(_report("published", version="v1", cost=_ledger(), resumes=1), width=200)

    header, row = text.splitlines()[1:3]
    assert header.split()[5:8] == ["RESUMES", "COST", "SAVED"]
    assert "1, lost 1m05s  $0.42  $0.96 (70%)" in row


def test_cost_columns_appear_only_where_a_cost_is_priced():
    unpriced = _ledger(cost_usd=0.0, on_demand_equivalent_usd=0.0, savings_usd=0.0, seconds_lost=0)

    header = render(_report("published", version="v1", cost=unpriced), width=200).splitlines()[1]

    assert "COST" not in header and "SAVED" not in header and "$" not in header
    assert "RESUMES" not in header  # nothing resumed, nothing lost: no column for it


def test_an_unknown_price_still_shows_the_cost_column_as_unknown():
    cost = _ledger(cost_usd=None, savings_usd=None, savings_percent=None, unpriced_attempts=1)

    text = render(_report("published", version="v1", cost=cost), width=200)

    assert "COST" in text.splitlines()[1]
    assert "unknown" in text.splitlines()[2]


def test_a_job_shows_how_long_it_ran_or_took():
    running = render(_report("running", duration_seconds=125.0), width=200)
    ended = render_model(_report("published", version="v1", duration_seconds=3725.0), "iris")

    assert "TIME" in running.splitlines()[1] and "2m05s" in running.splitlines()[2]
    assert "  took        1h02m" in ended.splitlines()
    assert (
        "  running for 2m05s"
        in render_model(_report("running", duration_seconds=125.0), "iris").splitlines()
    )


def test_a_stale_job_reads_stale_not_running():
    text = render(_report("running", stale=True), width=80)

    assert "stale" in text and "running" not in text
    assert "stale (runtime stopped)" in render(_report("running", stale=True), width=200)


def test_an_unknown_cost_reads_unknown_not_zero():
    cost = _ledger(cost_usd=None, savings_usd=None, savings_percent=None, unpriced_attempts=1)

    assert describe_cost(cost) == ("unknown", "unknown", "1m05s")


def test_collect_reports_each_jobs_ledger(store, registry, monkeypatch):
    from dropflow.records.jobs import Attempt, Job, JobStore

    monkeypatch.setattr(wiring, "jobs", lambda: JobStore(registry))
    monkeypatch.setattr(wiring, "catalog", lambda: Catalog(registry))
    attempt = Attempt(
        number=1,
        instance_id="i-1",
        lifecycle="spot",
        price_per_hour=0.3,
        on_demand_price_per_hour=1.0,
        launched_at=1000.0,
        ended_at=4600.0,
        seconds_lost=12.0,
    )
    JobStore(registry).create(
        Job(
            job_id="iris-20261123T101500Z-3f9a0c",
            model="iris",
            data_version="d",
            attempts=[attempt],
        )
    )

    (job,) = collect(now=5000.0)["jobs"]

    assert job["cost"]["cost_usd"] == pytest.approx(0.3)
    assert job["cost"]["on_demand_equivalent_usd"] == pytest.approx(1.0)
    assert job["cost"]["savings_percent"] == pytest.approx(70.0)
    assert job["cost"]["seconds_lost"] == 12.0
    json.dumps(job)  # --json prints it as it is


def test_a_model_shows_which_tier_serves_its_champion():
    report = {
        "jobs": [],
        "models": [
            {
                "model": "big",
                "champion": "v20261123T101500Z-3f9a0c",
                "route": "container",
                "versions": 2,
                "metric": "accuracy",
                "value": 0.97,
            }
        ],
    }

    text = render(report)

    assert "SERVED BY" in text
    assert "big    v20261123T101500Z-3f9a0c  container" in text


def test_collect_reports_what_promotion_decided_for_each_jobs_version(store, registry, monkeypatch):
    from dropflow.records.catalog import VersionRecord
    from dropflow.records.jobs import Job, JobStore

    monkeypatch.setattr(wiring, "jobs", lambda: JobStore(registry))
    monkeypatch.setattr(wiring, "catalog", lambda: Catalog(registry))
    for n, version in ((1, "v20261123T101501Z-000001"), (2, None)):
        job_id = f"iris-20261123T10150{n}Z-00000{n}"
        JobStore(registry).create(
            Job(job_id=job_id, model="iris", data_version="d", version=version)
        )
    Catalog(registry).record_version(
        VersionRecord(
            model="iris",
            version="v20261123T101501Z-000001",
            job_id="iris-20261123T101501Z-000001",
            decision="rejected",
            reason="would break the clients of the champion v0: classes would change",
        )
    )

    by_id = {j["job_id"]: j for j in collect(now=5000.0)["jobs"]}

    published = by_id["iris-20261123T101501Z-000001"]
    assert published["decision"] == "rejected"
    assert published["decision_reason"].endswith("classes would change")
    assert by_id["iris-20261123T101502Z-000002"]["decision"] is None


def test_a_queued_job_shows_its_place_in_line():
    report = _report("queued", attempts=0, queue_position=2)
    report["training_slots"] = {"running": 2, "waiting": 3}

    text = render(report, width=200)

    assert "queued" in text
    assert "number 2 of 3 in line for a training slot (2 training)" in text


def test_collect_gives_each_waiting_job_its_place_in_line(store, registry, monkeypatch):
    from dropflow.control.launcher import Launcher
    from dropflow.records.jobs import JobStore
    from dropflow.vocabulary.limits import OwnerLimits
    from tests.fakes_compute import FakeCompute

    monkeypatch.setattr(wiring, "jobs", lambda: JobStore(registry))
    monkeypatch.setattr(wiring, "catalog", lambda: Catalog(registry))
    launcher = Launcher(store, registry, FakeCompute(), limits=OwnerLimits(max_concurrent_jobs=1))
    for model in ("first", "second", "third"):
        store.put(f"datasets/{model}/data.csv", b"a,target\n1,0\n2,1\n")
        launcher.request_training(model)

    report = collect(compute=launcher.compute)

    places = {j["model"]: (j["state"], j["queue_position"]) for j in report["jobs"]}
    assert places == {
        "first": ("launching", None),
        "second": ("queued", 1),
        "third": ("queued", 2),
    }
    assert report["training_slots"] == {"running": 1, "waiting": 2}
    assert "number 2 of 2 in line for a training slot (1 training)" in render(report, width=200)


def test_resumes_count_the_attempts_after_an_interruption():
    from dropflow.records.jobs import Attempt, Job

    job = Job(
        job_id="iris-20261123T101500Z-3f9a0c",
        model="iris",
        data_version="d",
        attempts=[
            Attempt(number=1, exit_reason="interrupted; a checkpoint was stored (exit 75)"),
            Attempt(number=2, exit_reason="crashed (exit 1)"),
            Attempt(number=3, exit_reason="interrupted: spot-interruption"),
            Attempt(number=4),
        ],
    )

    assert resumes(job) == 2


def test_collect_calls_a_running_job_whose_process_ended_stale(store, registry, monkeypatch):
    """The runtime stopped: the job's instance ended and no tracker moved the job on."""
    from dropflow.control.launcher import Launcher
    from dropflow.records.jobs import JobStore
    from tests.fakes_compute import FakeCompute

    monkeypatch.setattr(wiring, "jobs", lambda: JobStore(registry))
    monkeypatch.setattr(wiring, "catalog", lambda: Catalog(registry))
    compute = FakeCompute()
    launcher = Launcher(store, registry, compute)
    for model in ("alive", "gone"):
        store.put(f"datasets/{model}/data.csv", b"a,target\n1,0\n2,1\n")
        launcher.request_training(model)
    (gone,) = [j for j in JobStore(registry).all() if j.model == "gone"]
    compute.end(gone.current_attempt.instance_id, None)  # killed with the runtime

    report = collect(compute=compute)

    stale = {j["model"]: (j["state"], j["stale"]) for j in report["jobs"]}
    assert stale == {"alive": ("launching", False), "gone": ("launching", True)}
    assert "stale (runtime stopped)" in render(report, width=200)
