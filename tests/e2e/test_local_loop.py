"""The embedded default end to end: drop a CSV -> train -> promote -> HTTP predict -> restart.

Runs `dropflow local up` as a user would (a child process on 127.0.0.1), drops a file into its
bucket folder with a plain file copy, and asks the HTTP API for predictions.
"""

from __future__ import annotations

import json
import re
import subprocess
from http import HTTPStatus
from typing import Any

import pytest
import requests

from dropflow.vocabulary.card import card_key
from dropflow_dev.demo import breast_cancer_csv
from tests.local_up import DROPFLOW, STEP_SECONDS, TERMINAL, LocalUp, status
from tests.net import wait_until

# Above each test's waits added up (with two starts of `local up`).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _predict(url: str, model: str, instances: list) -> requests.Response:
    return requests.post(f"{url}/models/{model}/predict", json={"instances": instances}, timeout=30)


def _rows() -> tuple[list[list[float]], list[str]]:
    lines = breast_cancer_csv().decode().splitlines()[1:4]
    cells = [line.split(",") for line in lines]
    return [[float(v) for v in c[:-1]] for c in cells], [c[-1] for c in cells]


def test_a_dropped_csv_is_served_over_http_and_survives_a_restart(tmp_path):
    home = tmp_path / "home"
    instances, labels = _rows()
    with LocalUp(home) as runtime:
        assert requests.get(f"{runtime.url}/health", timeout=10).status_code == HTTPStatus.OK
        before = _predict(runtime.url, "cancer", instances)
        assert before.status_code == HTTPStatus.NOT_FOUND

        # Given a data owner copies a CSV into the bucket folder
        target = home / "bucket" / "datasets" / "cancer" / "data.csv"
        target.parent.mkdir(parents=True)
        # The label's column is `diagnosis`, not a name taken as the target: the spec says so.
        (target.parent / "dropflow.yaml").write_text("target: diagnosis\n")
        target.write_bytes(breast_cancer_csv())

        # When its job has trained and published a version, and that version is promoted
        job = runtime.ended("cancer")
        assert job["state"] == "published", (job, runtime.output)
        runtime.promoted("cancer", job["version"])

        # Then the model answers over HTTP
        answer = _predict(runtime.url, "cancer", instances)
        assert answer.status_code == HTTPStatus.OK, (answer.text, runtime.output)
        body = answer.json()
        assert body["model"] == "cancer"
        assert body["version"] == job["version"]
        assert body["predictions"] == labels
        assert len(body["probabilities"]) == 3
        assert runtime.stop() == 0, runtime.output

    # After a restart the model is still served, without retraining
    with LocalUp(home) as again:
        answer = _predict(again.url, "cancer", instances)
        assert answer.status_code == HTTPStatus.OK, (answer.text, again.output)
        assert answer.json()["version"] == job["version"]
        assert again.stop() == 0, again.output

    report = status(home)
    assert [(j["model"], j["state"], j["attempts"]) for j in report["jobs"]] == [
        ("cancer", "published", 1)
    ]
    assert report["models"][0]["champion"] == job["version"]


def _training(job: dict[str, Any]) -> bool:
    """Whether the job's heartbeat says its current attempt has taken training steps."""
    progress = job.get("progress") or {}
    return progress.get("stage") == "training" and (progress.get("step") or 0) > 0


def test_a_spot_interruption_is_honoured_and_the_next_attempt_resumes(tmp_path):
    home = tmp_path / "home"
    prefix = home / "bucket" / "datasets" / "longer"
    prefix.mkdir(parents=True)
    # Thousands of steps (a minute or more of training), so that the notice comes mid-training
    # however quick the machine; a checkpoint every 2 s. The small MLP with every epoch run
    # (no early stopping): the test is about the interruption, not the network.
    (prefix / "dropflow.yaml").write_text(
        "target: diagnosis\nmodel:\n  family: mlp\n"
        "training:\n  epochs: 3000\n  batch_size: 32\n  early_stopping: false\n"
        "  checkpoint_interval_seconds: 2\n"
    )
    with LocalUp(home) as runtime:
        (prefix / "data.csv").write_bytes(breast_cancer_csv())

        # Given the job's first attempt is training (its heartbeat counts steps)
        job = wait_until(
            lambda: (j := runtime.job("longer")) and (_training(j) or j["state"] in TERMINAL) and j,
            STEP_SECONDS,
            interval=0.5,
            what=lambda: f"the first attempt to train; {runtime.output}",
        )
        assert _training(job) and job["attempts"] == 1, (job, runtime.output)

        # When the data owner's spot instance gets its 2-minute notice
        told = subprocess.run(
            [*DROPFLOW, "local", "interrupt", job["job_id"], "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert told.returncode == 0, told.stderr
        assert "spot interruption announced" in told.stdout

        # Then the job checkpoints, a second attempt resumes, and its version is promoted
        ended = runtime.ended("longer")
        assert (ended["state"], ended["attempts"]) == ("published", 2), (ended, runtime.output)
        runtime.promoted("longer", ended["version"])
        assert runtime.stop() == 0, runtime.output

    card = json.loads((home / "bucket" / card_key("longer", ended["version"])).read_text())
    first, second = card["attempts"]
    assert first["exit_reason"] == "interrupted: spot-interruption"
    assert 0 <= first["seconds_lost"] <= 2  # at most the checkpoint interval
    assert second["number"] == 2
    log = (home / "bucket" / "jobs" / "longer" / job["job_id"] / "log.txt").read_text()
    assert "===== attempt 1" in log and "===== attempt 2" in log
    # The second attempt went on from the very step at which the first one stopped.
    stopped = re.search(r"interrupted: spot-interruption at step (\d+)", log)
    assert stopped is not None, log
    assert card["training"]["resumed_from_step"] == int(stopped.group(1)) > 0
