"""The container route end to end (issue #5 acceptance): `dropflow local up` with a lowered
size threshold serves a freshly trained model through its container process, with
"served_by": "container"; with that process stopped, the answer is a 503 with Retry-After."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path

import pytest
import requests

from dropflow.demo import breast_cancer_csv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class LocalUp:
    """`dropflow local up` in a child process with extra flags, its console read by line."""

    def __init__(self, home: Path, *flags: str) -> None:
        command = [sys.executable, "-m", "dropflow.cli", "local", "up", "--home", str(home)]
        self.proc = subprocess.Popen(
            [*command, "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.console: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for(r"API on (http://127\.0\.0\.1:\d+)", 60).group(1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())

    def wait_for(self, pattern: str, seconds: float) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.console.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; console:\n" + "\n".join(self.console))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def _rows() -> list[list[float]]:
    lines = breast_cancer_csv().decode().splitlines()[1:3]
    return [[float(v) for v in line.split(",")[:-1]] for line in lines]


def test_a_model_over_the_lowered_threshold_is_served_by_the_container_process(tmp_path):
    home = tmp_path / "home"
    runtime = LocalUp(home, "--container-threshold-mb", "0.001")
    try:
        container_pid = int(runtime.wait_for(r"container tier on \S+ \(pid (\d+)\)", 30).group(1))
        predict = f"{runtime.url}/models/big/predict"

        # Given a model whose model.onnx is over the lowered threshold (any real one is)
        target = home / "bucket" / "datasets" / "big" / "data.csv"
        target.parent.mkdir(parents=True)
        target.write_bytes(breast_cancer_csv())
        runtime.wait_for(r"\[big\] v\S+ approved", 240)

        # Then it is served through the container process
        answer = requests.post(predict, json={"instances": _rows()}, timeout=30)
        assert answer.status_code == HTTPStatus.OK, answer.text
        assert answer.json()["served_by"] == "container"
        assert len(answer.json()["predictions"]) == 2
        described = requests.get(f"{runtime.url}/models/big", timeout=10).json()
        assert described["route"] == "container"

        # When the container process stops
        os.kill(container_pid, signal.SIGTERM)
        runtime.wait_for(r"container tier stopped", 30)

        # Then the model answers 503 with Retry-After, not 500
        refused = requests.post(predict, json={"instances": _rows()}, timeout=30)
        assert refused.status_code == HTTPStatus.SERVICE_UNAVAILABLE, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert "container tier" in refused.json()["error"]["message"]
    finally:
        assert runtime.stop() == 0, runtime.console
