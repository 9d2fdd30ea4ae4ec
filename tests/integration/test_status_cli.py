"""`dropflow status` as a terminal shows it, and the CLI piped into a reader that leaves early."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dropflow import wiring
from dropflow.adapters.local.process_compute import ProcessCompute
from dropflow.records.jobs import Attempt, Job, JobState, JobStore
from dropflow_dev.local.runtime import configure
from tests.contract.compute_helpers import JOB_ID, launch_request

DROPFLOW = [sys.executable, "-m", "dropflow_dev.cli"]
REASON = (
    "datasets/iris/part-2.csv, line 151: 3 fields, the header has 5; the file may have been cut "
    "off mid-upload: upload it again; " * 2  # longer than 200 columns
)
SECONDS = 120  # a Python start and its imports on a loaded 2-core machine


@pytest.fixture
def home(tmp_path, restored_environ):
    """A local home with jobs of two models, one of them failed with a long reason."""
    configure(tmp_path)
    jobs = JobStore(wiring.registry())
    for n, model in enumerate(("iris", "penguins", "wine") * 4):
        job = jobs.create(
            Job(
                job_id=f"{model}-20261123T1015{n:02d}Z-00000{n % 10}", model=model, data_version="d"
            )
        )
        jobs.transition(job.job_id, JobState.FAILED, reason=f"{REASON} ({n})")
    return tmp_path


def _dropflow(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [*DROPFLOW, *args], capture_output=True, text=True, env=env, timeout=SECONDS, check=False
    )


@pytest.mark.parametrize("columns", [80, 200])
def test_status_fits_the_terminal_width(home, columns):
    done = _dropflow("status", "--home", str(home), columns=columns)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert sum(line.endswith("…") for line in lines) == 12  # every reason cut, visibly


def test_status_of_one_model_shows_its_reasons_whole(home):
    done = _dropflow("status", "iris", "--home", str(home))

    assert done.returncode == 0, done.stderr
    assert f"{REASON} (0)" in done.stdout
    assert "penguins" not in done.stdout


def test_status_of_an_unknown_model_names_the_known_ones(home):
    done = _dropflow("status", "irsi", "--home", str(home))

    assert done.returncode == 2
    assert "no model 'irsi'" in done.stderr and "iris, penguins, wine" in done.stderr


def test_a_reader_that_leaves_early_gets_no_broken_pipe_noise(home):
    with subprocess.Popen(
        [*DROPFLOW, "status", "--home", str(home), "--wide"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        proc.stdout.close()  # as `head` does once it has its lines (here: before the first)
        _, stderr = proc.communicate(timeout=SECONDS)

    assert stderr.decode() == ""
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports a reader leaving early


def test_the_job_of_a_runtime_that_stopped_reads_stale_not_running(tmp_path, restored_environ):
    # Given a running job whose process the local runtime started
    paths = configure(tmp_path)
    compute = ProcessCompute(paths.compute, (sys.executable, "-c", "import time; time.sleep(600)"))
    instance = compute.launch(launch_request())
    jobs = JobStore(wiring.registry())
    attempt = Attempt(number=1, instance_id=instance.instance_id, started_at=instance.launched_at)
    jobs.create(Job(job_id=JOB_ID, model="iris", data_version="d", attempts=[attempt]))
    jobs.transition(JOB_ID, JobState.LAUNCHING)
    jobs.transition(JOB_ID, JobState.RUNNING)
    try:
        before = _dropflow("status", "--home", str(tmp_path), columns=200)
    finally:
        # When the runtime stops, as Ctrl-C stops it: its processes end, nothing tracks them
        compute.stop_all(grace=5.0)
    after = _dropflow("status", "--home", str(tmp_path), columns=200)
    as_json = _dropflow("status", "--home", str(tmp_path), "--json")

    # Then the job, still `running` in the registry, reads stale
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    row_before, row_after = (
        next(line for line in done.stdout.splitlines() if line.startswith(JOB_ID))
        for done in (before, after)
    )
    assert "running" in row_before and "stale" not in row_before
    assert "stale (runtime stopped)" in row_after and "running" not in row_after
    (job,) = json.loads(as_json.stdout)["jobs"]
    assert (job["state"], job["stale"]) == ("running", True)
