"""ProcessCompute beyond the port contract: exit codes, signals, the child's environment.

The contract every adapter meets is test_compute.py; these behaviours only exist for a
child process (EC2 reports no exit code and gives the instance no request environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dropflow.adapters.local.process_compute import ProcessCompute
from dropflow.ports import InstanceState
from tests.contract.compute_helpers import JOB_ID, ended, launch_request, ready

if TYPE_CHECKING:
    from conftest import ComputeBackend


def test_launched_instance_runs_then_reports_its_exit_code(process_backend: ComputeBackend) -> None:
    compute, release = process_backend.adapter, process_backend.workdir / "release"

    launched = compute.launch(
        launch_request(TEST_MODE="release", TEST_RELEASE=str(release), TEST_EXIT_CODE="3")
    )

    assert launched.state == InstanceState.RUNNING
    assert (launched.job_id, launched.attempt, launched.lifecycle) == (JOB_ID, 1, "spot")
    running = compute.describe(launched.instance_id)
    assert running is not None and running.state == InstanceState.RUNNING
    assert running.ended_at is None and running.exit_code is None

    release.touch()
    done = ended(compute, launched.instance_id)

    assert done.exit_code == 3
    assert done.ended_at is not None and done.ended_at >= done.launched_at
    assert (done.job_id, done.attempt) == (JOB_ID, 1)


def test_successful_run_reports_exit_code_zero(process_backend: ComputeBackend) -> None:
    inst = process_backend.adapter.launch(launch_request(TEST_MODE="exit", TEST_EXIT_CODE="0"))

    assert ended(process_backend.adapter, inst.instance_id).exit_code == 0


def test_instance_carries_the_job_identity(process_backend: ComputeBackend) -> None:
    out = process_backend.workdir / "seen.json"

    inst = process_backend.adapter.launch(
        launch_request(attempt=2, TEST_OUT=str(out), EXTRA="kept")
    )
    seen = ready(out)

    assert seen["env"]["DROPFLOW_JOB_ID"] == JOB_ID
    assert seen["env"]["DROPFLOW_MODEL"] == "iris"
    assert seen["env"]["DROPFLOW_ATTEMPT"] == "2"
    assert seen["env"]["DROPFLOW_INSTANCE_ID"] == inst.instance_id
    assert seen["argv"][-4:] == ["--job-id", JOB_ID, "--attempt", "2"]
    assert inst.job_id == JOB_ID and inst.attempt == 2


def test_terminate_stops_a_running_instance_within_the_grace_period(
    process_backend: ComputeBackend,
) -> None:
    compute, out = process_backend.adapter, process_backend.workdir / "ready.json"
    inst = compute.launch(launch_request(TEST_MODE="graceful", TEST_OUT=str(out)))
    ready(out)

    started = time.monotonic()
    compute.terminate(inst.instance_id)
    took = time.monotonic() - started

    done = ended(compute, inst.instance_id)
    assert took < process_backend.grace
    assert done.exit_code in (75, None)  # the trainer's "interrupted, resume me"


def test_terminate_an_instance_that_ignores_sigterm_still_stops_it(
    process_backend: ComputeBackend,
) -> None:
    compute, out = process_backend.adapter, process_backend.workdir / "ready.json"
    inst = compute.launch(launch_request(TEST_MODE="stubborn", TEST_OUT=str(out)))
    ready(out)

    started = time.monotonic()
    compute.terminate(inst.instance_id)

    ended(compute, inst.instance_id)
    assert time.monotonic() - started < process_backend.grace + 10


def test_a_second_adapter_sees_the_instance_and_its_exit_code(
    process_backend: ComputeBackend,
) -> None:
    first, release = process_backend.adapter, process_backend.workdir / "release"
    inst = first.launch(
        launch_request(TEST_MODE="release", TEST_RELEASE=str(release), TEST_EXIT_CODE="4")
    )
    second = process_backend.new_adapter()

    seen = second.describe(inst.instance_id)
    assert seen is not None and seen.state == InstanceState.RUNNING
    assert inst.instance_id in {i.instance_id for i in second.list_instances()}

    release.touch()

    assert ended(second, inst.instance_id).exit_code == 4
    assert ended(first, inst.instance_id).exit_code == 4


_LAUNCH_AND_LEAVE = textwrap.dedent(
    """
    import sys
    from dropflow.adapters.local.process_compute import ProcessCompute
    from dropflow.ports import LaunchRequest

    compute = ProcessCompute(sys.argv[1], sys.argv[2:])
    inst = compute.launch(LaunchRequest(
        job_id="iris-20261123T101500Z-3f9a0c", model="iris", attempt=1,
        environment={"TEST_MODE": "sleep"},
    ))
    print(inst.instance_id)
    """
)


def test_instance_launched_by_a_process_that_has_exited_can_be_managed(
    tmp_path: Path, entrypoint: tuple[str, ...]
) -> None:
    # `dropflow local up` restarted: the process that launched the instance is gone.
    state_dir = tmp_path / "compute"
    launcher = subprocess.run(
        [sys.executable, "-c", _LAUNCH_AND_LEAVE, str(state_dir), *entrypoint],
        capture_output=True,
        text=True,
        timeout=120,  # a bound for a loaded machine: the launch itself takes a second
        check=True,
    )
    instance_id = launcher.stdout.strip()
    compute = ProcessCompute(state_dir, grace=2.0)
    try:
        running = compute.describe(instance_id)
        assert running is not None and running.state == InstanceState.RUNNING

        compute.terminate(instance_id)

        done = compute.describe(instance_id)
        assert done is not None and done.state == InstanceState.TERMINATED
        assert done.exit_code == -15  # SIGTERM, reported by the wrapper
    finally:
        compute.stop_all(grace=1.0)


def test_terminate_right_after_launch_is_recorded_as_sigterm(
    tmp_path: Path, entrypoint: tuple[str, ...]
) -> None:
    # The wrapper may still be starting its interpreter: the signal must not be lost.
    compute = ProcessCompute(tmp_path / "compute", entrypoint, grace=5.0)

    inst = compute.launch(launch_request(TEST_MODE="sleep"))
    compute.terminate(inst.instance_id)

    done = compute.describe(inst.instance_id)
    assert done is not None and done.state == InstanceState.TERMINATED
    assert done.exit_code == -15


def test_stop_all_ends_every_running_instance(tmp_path: Path, entrypoint: tuple[str, ...]) -> None:
    compute = ProcessCompute(tmp_path / "compute", entrypoint, grace=5.0)
    instances = [compute.launch(launch_request(attempt=n, TEST_MODE="sleep")) for n in (1, 2, 3)]

    started = time.monotonic()
    stopped = compute.stop_all(grace=5.0)

    assert time.monotonic() - started < 5.0
    assert {i.instance_id for i in stopped} == {i.instance_id for i in instances}
    assert all(i.state == InstanceState.TERMINATED for i in compute.list_instances())


def test_sigkill_after_the_grace_period_leaves_no_exit_code(
    tmp_path: Path, entrypoint: tuple[str, ...]
) -> None:
    out = tmp_path / "ready.json"
    compute = ProcessCompute(tmp_path / "compute", entrypoint, grace=0.3)
    inst = compute.launch(launch_request(TEST_MODE="stubborn", TEST_OUT=str(out)))
    ready(out)
    pid = json.loads((tmp_path / "compute" / f"{inst.instance_id}.json").read_text())["pid"]

    compute.terminate(inst.instance_id)

    done = compute.describe(inst.instance_id)
    assert done is not None and done.state == InstanceState.TERMINATED
    assert done.exit_code is None  # killed: nobody was left to record one
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie


def test_missing_entrypoint_ends_with_exit_code_127(tmp_path: Path) -> None:
    compute = ProcessCompute(tmp_path / "compute", ("/nonexistent/trainer",))

    inst = compute.launch(launch_request())

    assert ended(compute, inst.instance_id).exit_code == 127
    assert "/nonexistent/trainer" in (tmp_path / "compute" / f"{inst.instance_id}.log").read_text()


def test_a_reused_pid_is_not_mistaken_for_the_instance(tmp_path: Path) -> None:
    # A record whose pid now belongs to another process (this one) with another start time.
    state_dir = tmp_path / "compute"
    state_dir.mkdir()
    record = {
        "instance_id": "proc-00000000abcd",
        "job_id": JOB_ID,
        "model": "iris",
        "attempt": 1,
        "instance_type": "local",
        "lifecycle": "spot",
        "zone": "local",
        "launched_at": time.time() - 3600,
        "pid": os.getpid(),
        "start_ticks": 1,
        "boot_id": None,
        "ended_at": None,
        "exit_code": None,
    }
    (state_dir / "proc-00000000abcd.json").write_text(json.dumps(record))
    compute = ProcessCompute(state_dir)

    compute.terminate("proc-00000000abcd")  # must not signal this test process

    inst = compute.describe("proc-00000000abcd")
    assert inst is not None and inst.state == InstanceState.TERMINATED
    assert inst.exit_code is None


@pytest.mark.parametrize("argv", [[], ["--exit-file", "f"], ["--wrong", "f", "--", "true"]])
def test_wrapper_rejects_a_malformed_command_line(argv: list[str]) -> None:
    from dropflow.adapters.local.process_compute import main

    assert main(argv) == 2
