"""`dropflow local up`'s container tier: `python -m serving` as a child process that the predict
function forwards to, restarted only when a promotion asks the tier to scale out."""

from __future__ import annotations

import os
from http import HTTPStatus

import pytest

from dropflow.adapters.local.process_tier import ProcessTier
from dropflow_dev.local.runtime import LocalRuntime
from tests.net import wait_ready

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture
def runtime(tmp_path, restored_environ):
    # The runtime configures this process, as `local up` does.
    os.environ.pop("DROPFLOW_LAMBDA_MAX_MODEL_MB", None)
    lines: list[str] = []
    local = LocalRuntime(tmp_path / "home", port=0, container_threshold_mb=0.001, say=lines.append)
    local.lines = lines
    try:
        local.start()
        yield local
    finally:
        local.stop()


def test_the_runtime_starts_the_container_and_points_the_predict_function_at_it(runtime):
    assert runtime.container.running()
    assert os.environ["DROPFLOW_CONTAINER_URL"] == runtime.container.url
    assert os.environ["DROPFLOW_LAMBDA_MAX_MODEL_MB"] == "0.001"
    assert any(f"container tier on {runtime.container.url}" in line for line in runtime.lines)
    assert wait_ready(runtime.container.url, 120) == HTTPStatus.OK


def test_the_container_is_the_production_server_with_one_worker(runtime):
    command = runtime.container.proc.args

    assert command[1:3] == ["-m", "serving"]
    assert command[command.index("--workers") + 1] == "1"
    assert wait_ready(runtime.container.url, 120) == HTTPStatus.OK


def test_a_stopped_container_stays_stopped_until_a_scale_out(runtime):
    runtime.container.proc.terminate()
    runtime.container.proc.wait(10)

    runtime.tick()
    assert not runtime.container.running()
    assert any("container tier stopped" in line for line in runtime.lines)

    ProcessTier(runtime.paths.serving).scale_out(1)
    runtime.tick()

    assert runtime.container.running()
    assert wait_ready(runtime.container.url, 120) == HTTPStatus.OK


def test_stop_ends_the_container_process(runtime):
    proc = runtime.container.proc

    runtime.stop()

    assert proc.poll() is not None
