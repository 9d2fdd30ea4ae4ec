"""Drops that cannot break clients, on `dropflow local up` (issue 12): a CSV cut off mid-row
beside the data fails its job naming file and line, and a fragment that trains into a class of
its own is not promoted; the champion keeps serving the same classes throughout, and
`dropflow status` and `dropflow models list` say why.
"""

from __future__ import annotations

import subprocess
from http import HTTPStatus
from typing import Any

import pytest
import requests

from dropflow_dev.demo import breast_cancer_csv
from tests.local_up import DROPFLOW, JOB_SECONDS, START_SECONDS, TERMINAL, LocalUp
from tests.net import wait_until

# Above the test's waits added up: three jobs and a promotion on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

MODEL = "cancer"
LINES = breast_cancer_csv().decode().splitlines()
HEADER, ROWS = LINES[0], LINES[1:]
FIELDS = len(HEADER.split(","))


def _predict(url: str, rows: list[list[float]]) -> dict[str, Any]:
    answer = requests.post(f"{url}/models/{MODEL}/predict", json={"instances": rows}, timeout=30)
    assert answer.status_code == HTTPStatus.OK, answer.text
    return answer.json()


def _next_job(runtime: LocalUp, after: str) -> dict[str, Any]:
    """The model's first job newer than job `after`, once it has ended."""
    return wait_until(
        lambda: (
            (job := runtime.job(MODEL)) is not None
            and job["job_id"] != after
            and job["state"] in TERMINAL
            and job
        ),
        JOB_SECONDS,
        interval=1.0,
        what=lambda: f"a job after {after} to end; {runtime.output}",
    )


def _dropflow(*args: str) -> str:
    done = subprocess.run(
        [*DROPFLOW, *args], capture_output=True, text=True, timeout=START_SECONDS, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_truncated_csv_leaves_the_champion_serving_the_same_classes(tmp_path):
    home = tmp_path / "home"
    prefix = home / "bucket" / "datasets" / MODEL
    rows = [[float(v) for v in line.split(",")[:-1]] for line in ROWS[:3]]
    with LocalUp(home) as runtime:
        # Given a model trained on a good drop and served
        prefix.mkdir(parents=True)
        (prefix / "dropflow.yaml").write_text("target: diagnosis\n")  # the label's column
        (prefix / "data.csv").write_bytes(breast_cancer_csv())
        first = runtime.ended(MODEL)
        assert first["state"] == "published", (first, runtime.output)
        runtime.promoted(MODEL, first["version"])
        before = _predict(runtime.url, rows)
        assert len(before["probabilities"][0]) == 2  # benign, malignant

        # When a second file arrives cut off in the middle of its last row
        cut_row = ",".join(ROWS[10].split(",")[:7])[:-2]
        (prefix / "part-2.csv").write_text("\n".join([HEADER, *ROWS[5:10], cut_row]))

        # Then its job fails naming the file and the line, and says so in `dropflow status`
        failed = _next_job(runtime, first["job_id"])
        assert failed["state"] == "failed", (failed, runtime.output)
        expected = (
            f"datasets/{MODEL}/part-2.csv, line 7: 7 fields, the header has {FIELDS}; the file "
            "may have been cut off mid-upload: upload it again"
        )
        assert expected in (failed["reason"] or ""), failed
        assert expected in _dropflow("status", MODEL, "--home", str(home))  # whole, not cut
        answer = _predict(runtime.url, rows)
        assert answer["version"] == first["version"]
        assert answer["probabilities"] == before["probabilities"]

        # When the cut keeps the field count and ends the line, so training takes `mal` for a
        # class of its own (the fragment of `malignant` the issue reproduced)
        fragment = ",".join([*ROWS[10].split(",")[:-1], "mal"])
        (prefix / "part-2.csv").write_text("\n".join([HEADER, *ROWS[5:10], fragment]) + "\n")

        # Then the version it publishes is rejected, and `models list` says why
        published = _next_job(runtime, failed["job_id"])
        assert published["state"] == "published", (published, runtime.output)
        decided = wait_until(
            lambda: (
                (job := runtime.job(MODEL)) and job["decision"] not in (None, "pending") and job
            ),
            JOB_SECONDS,
            interval=1.0,
            what=lambda: f"a decision on {published['version']}; {runtime.output}",
        )
        assert decided["decision"] == "rejected", (decided, runtime.output)
        listed = _dropflow("models", "list", MODEL, "--home", str(home))
        (line,) = [row for row in listed.splitlines() if published["version"] in row]
        assert (
            "classes would change from [benign, malignant] to [benign, mal, malignant]" in line
        ), listed
        assert "rejected: would break the clients" in _dropflow(
            "status", MODEL, "--home", str(home)
        )

        # And the champion still answers with the same two classes
        assert runtime.champion(MODEL) == first["version"]
        answer = _predict(runtime.url, rows)
        assert answer["version"] == first["version"]
        assert len(answer["probabilities"][0]) == 2
        assert runtime.stop() == 0, runtime.output
