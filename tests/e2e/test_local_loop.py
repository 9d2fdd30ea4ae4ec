"""The embedded default end to end: drop a CSV -> train -> promote -> HTTP predict -> restart.

Runs `dropflow local up` as a user would (a child process on 127.0.0.1), drops a file into its
bucket folder with a plain file copy, and asks the HTTP API for predictions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from http import HTTPStatus
from pathlib import Path

import pytest
import requests

from dropflow_dev.demo import breast_cancer_csv
from tests.local_up import LocalUp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
DROPFLOW = [sys.executable, "-m", "dropflow_dev.cli"]


def _predict(url: str, model: str, instances: list) -> requests.Response:
    return requests.post(f"{url}/models/{model}/predict", json={"instances": instances}, timeout=30)


def _rows() -> tuple[list[list[float]], list[str]]:
    lines = breast_cancer_csv().decode().splitlines()[1:4]
    cells = [line.split(",") for line in lines]
    return [[float(v) for v in c[:-1]] for c in cells], [c[-1] for c in cells]


def test_a_dropped_csv_is_served_over_http_and_survives_a_restart(tmp_path):
    home = tmp_path / "home"
    instances, labels = _rows()
    runtime = LocalUp(home)
    try:
        assert requests.get(f"{runtime.url}/health", timeout=10).status_code == HTTPStatus.OK
        before = _predict(runtime.url, "cancer", instances)
        assert before.status_code == HTTPStatus.NOT_FOUND

        # Given a data owner copies a CSV into the bucket folder
        target = home / "bucket" / "datasets" / "cancer" / "data.csv"
        target.parent.mkdir(parents=True)
        target.write_bytes(breast_cancer_csv())

        # Then within 120 s the model answers over HTTP
        deadline = time.monotonic() + 120
        answer = _predict(runtime.url, "cancer", instances)
        while answer.status_code != HTTPStatus.OK and time.monotonic() < deadline:
            assert answer.status_code in (HTTPStatus.NOT_FOUND, HTTPStatus.SERVICE_UNAVAILABLE)
            time.sleep(1)
            answer = _predict(runtime.url, "cancer", instances)
        assert answer.status_code == HTTPStatus.OK, runtime.console
        body = answer.json()
        assert body["model"] == "cancer"
        assert body["predictions"] == labels
        assert len(body["probabilities"]) == 3
        version = body["version"]
    finally:
        assert runtime.stop() == 0, runtime.console

    # After a restart the model is still served, without retraining
    again = LocalUp(home)
    try:
        answer = _predict(again.url, "cancer", instances)
        assert answer.status_code == HTTPStatus.OK
        assert answer.json()["version"] == version
    finally:
        assert again.stop() == 0

    status = subprocess.run(
        [sys.executable, "-m", "dropflow_dev.cli", "status", "--home", str(home), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(status.stdout)
    assert [(j["model"], j["state"], j["attempts"]) for j in report["jobs"]] == [
        ("cancer", "published", 1)
    ]
    assert report["models"][0]["champion"] == version


def _registry_job(home: Path, model: str):
    from dropflow.adapters.local.sqlite_registry import SqliteRegistry
    from dropflow.records.jobs import JobStore

    jobs = JobStore(SqliteRegistry(home / "registry.db")).for_model(model)
    return jobs[-1] if jobs else None


def test_a_spot_interruption_is_honoured_and_the_next_attempt_resumes(tmp_path):
    home = tmp_path / "home"
    prefix = home / "bucket" / "datasets" / "longer"
    prefix.mkdir(parents=True)
    # Long enough (about 20 s here) that the notice comes mid-training; a checkpoint every 2 s.
    (prefix / "dropflow.yaml").write_text(
        "training:\n  epochs: 3000\n  batch_size: 32\n  checkpoint_interval_seconds: 2\n"
    )
    runtime = LocalUp(home)
    try:
        (prefix / "data.csv").write_bytes(breast_cancer_csv())
        job = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = _registry_job(home, "longer")
            if (
                job
                and (home / "bucket" / "jobs" / "longer" / job.job_id / "manifest.json").exists()
            ):
                break
            time.sleep(0.2)
        assert job is not None and job.state.value == "running", runtime.console

        # When the data owner's spot instance gets its 2-minute notice
        told = subprocess.run(
            [*DROPFLOW, "local", "interrupt", job.job_id, "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert told.returncode == 0, told.stderr
        assert "spot interruption announced" in told.stdout

        # Then the job checkpoints, a second attempt resumes, and its version is promoted
        runtime.wait_for(r"\[longer\] v\S+ approved", 240)
    finally:
        assert runtime.stop() == 0, runtime.console

    [card_file] = (home / "bucket" / "models" / "longer").glob("*/card.json")
    card = json.loads(card_file.read_text())
    first, second = card["attempts"]
    assert first["exit_reason"] == "interrupted: spot-interruption"
    assert 0 <= first["seconds_lost"] <= 2  # at most the checkpoint interval
    assert second["number"] == 2
    assert card["training"]["resumed_from_step"] > 0
    log = (home / "bucket" / "jobs" / "longer" / job.job_id / "log.txt").read_text()
    assert "===== attempt 1" in log and "===== attempt 2" in log
