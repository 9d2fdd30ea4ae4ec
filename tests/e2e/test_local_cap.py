"""The cap on training jobs at once, end to end: 12 datasets dropped together into
`dropflow local up --max-jobs 3` never have more than 3 training processes running at the same
time, the others wait in line, and all 12 are trained, promoted and served in the end.

What runs at once is read from the runtime's own state while it works, every 0.2 s: the
compute records under <home>/compute (a process whose wrapper still runs and has written no
exit code is a training process at work) and the job states in the registry (a job that is
launching, running, exporting or interrupted holds a training slot).
"""

from __future__ import annotations

import json
import os
import threading
from http import HTTPStatus
from pathlib import Path

import pytest
import requests

from dropflow.adapters.local.sqlite_registry import SqliteRegistry
from dropflow.records.jobs import JobState, JobStore
from tests.local_up import JOB_SECONDS, STEP_SECONDS, LocalUp
from tests.net import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

CAP = 3
MODELS = [f"tiny-{n:02d}" for n in range(12)]
# Few rows, few epochs: the cost of each job is starting Python and torch, not training.
SPEC = (
    "training: {epochs: 15, batch_size: 16, learning_rate: 0.05, checkpoint_interval_seconds: 0}\n"
)
HOLDING = {JobState.LAUNCHING, JobState.RUNNING, JobState.EXPORTING, JobState.INTERRUPTED}


def tiny_csv(seed: int) -> bytes:
    """60 rows whose label is plainly `a > 0.5`: any model learns it in a few epochs."""
    rows = ["a,b,label"]
    for n in range(60):
        a = ((n * 37 + seed * 11) % 60) / 59
        b = ((n * 53 + seed * 7) % 60) / 59
        rows.append(f"{a:.4f},{b:.4f},{'high' if a > 0.5 else 'low'}")
    return ("\n".join(rows) + "\n").encode()


def training_processes(compute: Path) -> int:
    """Processes of the local compute still at work: a record without an exit file whose
    wrapper process is alive (read-only: the runtime owns these files)."""
    count = 0
    for path in compute.glob("proc-*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written
        if path.with_suffix(".exit").exists():
            continue
        try:
            stat = Path(f"/proc/{int(record['pid'])}/stat").read_text()
        except (OSError, KeyError, ValueError):
            continue
        if stat[stat.rindex(")") + 2] not in "ZX":
            count += 1
    return count


class Observer(threading.Thread):
    """Polls what runs at once until stopped; keeps the most seen of each."""

    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        self.home = home
        self.most_processes = 0
        self.most_holding = 0
        self.most_queued = 0
        self.seen = ""
        self.stopped = threading.Event()

    def run(self) -> None:
        jobs = None
        while not self.stopped.wait(0.2):
            processes = training_processes(self.home / "compute")
            if jobs is None and (self.home / "registry.db").exists():
                jobs = JobStore(SqliteRegistry(self.home / "registry.db"))
            states = {j.job_id: j.state.value for j in jobs.all()} if jobs else {}
            holding = sum(JobState(s) in HOLDING for s in states.values())
            if processes > self.most_processes or holding > self.most_holding:
                self.seen = f"{processes} processes at once; jobs {states}"  # for a failure
            self.most_processes = max(self.most_processes, processes)
            self.most_holding = max(self.most_holding, holding)
            self.most_queued = max(self.most_queued, list(states.values()).count("queued"))


def test_twelve_drops_at_once_never_run_more_than_the_cap_and_all_are_served(tmp_path):
    home = tmp_path / "home"
    observer = Observer(home)
    with LocalUp(home, "--max-jobs", str(CAP), "--no-container") as runtime:
        observer.start()
        # The line after "API on": read by the console thread a moment after the start.
        runtime.wait_for(f"at most {CAP} training jobs at once", 60)

        # Given 12 datasets dropped at once (each spec in place before its data)
        staged = tmp_path / "staged"
        for n, model in enumerate(MODELS):
            (staged / model).mkdir(parents=True)
            (staged / model / "dropflow.yaml").write_text(SPEC)
            (staged / model / "data.csv").write_bytes(tiny_csv(n))
        datasets = home / "bucket" / "datasets"
        datasets.mkdir(parents=True, exist_ok=True)
        for model in MODELS:
            os.rename(staged / model, datasets / model)

        # When all of them have been trained
        def all_ended():
            jobs = {j["model"]: j for j in reversed(runtime.status()["jobs"])}
            return (
                len(jobs) == len(MODELS)
                and all(j["state"] in ("published", "failed") for j in jobs.values())
                and jobs
            )

        ended = wait_until(
            all_ended,
            JOB_SECONDS * 3,
            interval=2.0,
            what=lambda: f"all 12 jobs to end; {runtime.output}",
        )
        observer.stopped.set()
        observer.join(10)

        # Then never more than the cap trained together, and the others waited in line
        assert observer.most_processes <= CAP, (observer.seen, runtime.output)
        assert observer.most_holding <= CAP, (observer.seen, runtime.output)
        assert observer.most_processes >= 2  # they did train side by side
        assert observer.most_queued >= 1  # and the cap made some wait
        assert {m: j["state"] for m, j in ended.items()} == dict.fromkeys(MODELS, "published")

        # And every model is served
        for model in MODELS:
            runtime.promoted(model, ended[model]["version"])
        for model in MODELS:
            answer = requests.post(
                f"{runtime.url}/models/{model}/predict",
                json={"instances": [[0.9, 0.1], [0.1, 0.9]]},
                timeout=STEP_SECONDS,
            )
            assert answer.status_code == HTTPStatus.OK, (model, answer.text)
            assert answer.json()["predictions"] == ["high", "low"], (model, answer.text)
        assert runtime.stop() == 0, runtime.output
