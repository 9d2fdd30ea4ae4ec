"""`dropflow local up --max-jobs N`: how many training processes run at once on this machine,
and the default when it is not given."""

from __future__ import annotations

import os

import pytest

from dropflow import wiring
from dropflow_dev.cli import build_parser
from dropflow_dev.local.runtime import MAX_JOBS_RULE, LocalRuntime, default_max_jobs


@pytest.mark.parametrize(
    ("cpus", "memory_gib", "jobs"),
    [
        (2, 24.0, 1),  # a 2-core laptop: one at a time
        (16, 64.0, 8),  # cores decide
        (16, 6.0, 3),  # memory decides
        (1, 0.5, 1),  # never none
        (8, None, 4),  # memory unknown: cores alone
    ],
)
def test_the_default_is_one_job_per_two_cores_and_per_two_gib(cpus, memory_gib, jobs):
    assert default_max_jobs(cpus, memory_gib) == jobs


def test_the_help_says_the_rule_and_what_it_gives_here(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["local", "up", "--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert "--max-jobs N" in text
    assert MAX_JOBS_RULE in text
    assert f"{default_max_jobs()} on this machine" in text


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_max_jobs_must_be_a_whole_number_of_at_least_one(capsys, value):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["local", "up", "--max-jobs", value])

    assert "argument --max-jobs" in capsys.readouterr().err


@pytest.fixture
def environment(monkeypatch):
    """This test's own os.environ: the runtime sets its variables there."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    os.environ.pop("DROPFLOW_MAX_CONCURRENT_JOBS", None)
    yield os.environ
    wiring.reset()


def test_the_runtime_holds_the_launcher_to_max_jobs(environment, tmp_path):
    runtime = LocalRuntime(tmp_path / "home", max_jobs=2, container=False, say=lambda _: None)

    assert runtime.max_jobs == 2
    assert environment["DROPFLOW_MAX_CONCURRENT_JOBS"] == "2"
    assert wiring.launcher().limits.max_concurrent_jobs == 2


def test_without_max_jobs_the_runtime_takes_the_machines_default(environment, tmp_path):
    runtime = LocalRuntime(tmp_path / "home", container=False, say=lambda _: None)

    assert runtime.max_jobs == default_max_jobs()
    assert environment["DROPFLOW_MAX_CONCURRENT_JOBS"] == str(default_max_jobs())
