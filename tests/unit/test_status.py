"""`dropflow status` shows each job's state and, while it runs, its heartbeat."""

from __future__ import annotations

from dropflow.status import describe_progress, render


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
    text = render(_report("running", progress={"stage": "training", "epoch": 3, "epochs": 9}))

    assert "iris-20261123T101500Z-3f9a0c  iris   running  2" in text
    assert "training epoch 3/9" in text


def test_a_failed_job_shows_its_reason():
    text = render(_report("failed", reason="data.csv line 3, column 'b': 'x' is not a number"))

    assert "failed" in text
    assert "data.csv line 3, column 'b'" in text
    assert "(no models yet)" in text
