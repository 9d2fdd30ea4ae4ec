"""The container route end to end (issue #5 acceptance): `dropflow local up` with a lowered
size threshold serves a freshly trained model through its container process, with
"served_by": "container"; with that process stopped, the answer is a 503 with Retry-After."""

from __future__ import annotations

import os
import signal
from http import HTTPStatus

import pytest
import requests

from dropflow_dev.demo import breast_cancer_csv
from tests.local_up import START_SECONDS, LocalUp

# Above the waits of tests/local_up.py added up.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _rows() -> list[list[float]]:
    lines = breast_cancer_csv().decode().splitlines()[1:3]
    return [[float(v) for v in line.split(",")[:-1]] for line in lines]


def test_a_model_over_the_lowered_threshold_is_served_by_the_container_process(tmp_path):
    home = tmp_path / "home"
    with LocalUp(home, "--container-threshold-mb", "0.001") as runtime:
        started = runtime.wait_for(r"container tier on \S+ \(pid (\d+)\)", START_SECONDS)
        container_pid = int(started.group(1))
        predict = f"{runtime.url}/models/big/predict"

        # Given a model whose model.onnx is over the lowered threshold (any real one is)
        target = home / "bucket" / "datasets" / "big" / "data.csv"
        target.parent.mkdir(parents=True)
        (target.parent / "dropflow.yaml").write_text("target: diagnosis\n")  # the label's column
        target.write_bytes(breast_cancer_csv())
        job = runtime.ended("big")
        assert job["state"] == "published", runtime.output
        runtime.promoted("big", job["version"])

        # Then it is served through the container process
        answer = requests.post(predict, json={"instances": _rows()}, timeout=30)
        assert answer.status_code == HTTPStatus.OK, answer.text
        assert answer.json()["served_by"] == "container"
        assert len(answer.json()["predictions"]) == 2
        described = requests.get(f"{runtime.url}/models/big", timeout=10).json()
        assert described["route"] == "container"

        # When the container process stops
        os.kill(container_pid, signal.SIGTERM)
        runtime.wait_for(r"container tier stopped", START_SECONDS)

        # Then the model answers 503 with Retry-After, not 500
        refused = requests.post(predict, json={"instances": _rows()}, timeout=30)
        assert refused.status_code == HTTPStatus.SERVICE_UNAVAILABLE, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert "container tier" in refused.json()["error"]["message"]

        assert runtime.stop() == 0, runtime.output
