"""`dropflow status` as a terminal shows it, and the CLI piped into a reader that leaves early."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dropflow import wiring
from dropflow.records.jobs import Job, JobState, JobStore
from dropflow_dev.local.runtime import configure

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
