"""Interrupt a training run and resume it: the weights must end as if nothing happened.

The loop-level tests stop a run after K steps (a stop check that turns true), store the
checkpoint in a DirectoryStore, and resume in a new loop from what the store holds. The job-
level tests run attempt 1 until a (fake) spot notice stops it, then attempt 2 as the tracker
would launch it, and compare the published model with an uninterrupted job's. Tolerance:
max |resumed - uninterrupted| <= 1e-6 on every weight (on the CPU it is 0 in practice).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from dropflow.records.jobs import Attempt, ExitCode, JobState, JobStore
from dropflow.vocabulary.card import Card, read_card
from dropflow.vocabulary.spec import ModelSection, TrainingSection
from dropflow.wiring import open_registry, open_store
from tests.net import wait_until
from tests.training_jobs import flip_tensor_byte, launched_job, train_tabular
from training import checkpoint as ckpt
from training.checkpoint import CheckpointStore, Lineage
from training.job import run_job

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-6
# The default network (tabm) on breast cancer: 569 rows, 114 held out, 91 for validation, 364
# to train on in 8 steps of 46 rows an epoch.
SPEC = b"training: {epochs: 12, batch_size: 46, checkpoint_interval_seconds: 0}\n"


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def max_weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


class StopAfter:
    """A stop check that turns true after `n` step boundaries (the loop asks once per step)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.n

    def is_set(self) -> bool:  # also usable where an Event is expected
        return self()


# --------------------------------------------------------------------------- the loop
@pytest.mark.parametrize(
    ("model", "training", "stop_after"),
    [
        # The MLP inside its 2nd epoch (8 steps each).
        (ModelSection(family="mlp"), TrainingSection(epochs=4, batch_size=64), 13),
        (
            # Dropout draws from the torch RNG.
            ModelSection(family="mlp", hidden_layers=[32], dropout=0.3),
            TrainingSection(epochs=4, lr_schedule="cosine", batch_size=50),
            10,  # at the end of the first epoch (10 steps each)
        ),
        (
            # The default network: its submodels, dropout, early stopping's best weights and
            # counters, and the temperature fitted at the end.
            ModelSection(ensemble_size=4, hidden_layers=[32, 32]),
            TrainingSection(epochs=30, batch_size=64),
            67,  # inside the 14th epoch (5 steps each), with a best epoch already kept
        ),
    ],
    ids=["mlp-mid-epoch", "mlp-dropout-cosine-epoch-end", "tabm-early-stopping"],
)
def test_a_stopped_and_resumed_loop_ends_with_the_uninterrupted_weights(
    tmp_path, model, training, stop_after
):
    x, y = breast_cancer()
    x, y = x[:455], y[:455]
    validation = {}
    if model.family == "tabm":
        validation = {"rows": np.arange(300), "validation_rows": np.arange(300, 455)}
    options = {
        "task": "classification",
        "n_classes": 2,
        "model": model,
        "training": training,
        **validation,
    }
    straight = train_tabular(x, y, **options)

    store = open_store(f"file://{tmp_path}/bucket")
    lineage = Lineage(
        job_id="bc-20260101T000000Z-abcdef", attempt=1, data_version="d", spec_hash="s"
    )
    sink = CheckpointStore(store, "bc", lineage)
    first = train_tabular(
        x, y, sink=sink, stop=StopAfter(stop_after), checkpoint_seconds=0, **options
    )
    assert not first.completed and first.step == stop_after

    found = CheckpointStore(store, "bc", lineage).latest()
    assert found is not None and found.step == stop_after
    resumed = train_tabular(x, y, resume=found.checkpoint, **options)

    assert resumed.completed and resumed.resumed_from == stop_after
    assert straight.resumes == [] and resumed.resumes == [stop_after]
    assert resumed.step == straight.step
    assert max_weight_diff(resumed.network.state_dict(), straight.network.state_dict()) <= TOLERANCE
    assert resumed.losses == straight.losses
    assert resumed.validation_losses == straight.validation_losses
    assert resumed.best_epoch == straight.best_epoch
    assert resumed.calibration == straight.calibration
    if validation:
        assert found.checkpoint["early_stopping"]["best"] is not None
        assert straight.best_epoch is not None and straight.calibration is not None


# --------------------------------------------------------------------------- the job
class Home:
    """A bucket and a registry in a folder; jobs created and relaunched as the tracker does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = open_store(f"file://{root}/bucket")
        self.registry = open_registry(f"sqlite://{root}/registry.db")
        self.jobs = JobStore(self.registry)

    def drop(self, model: str, data: bytes, name: str = "data.csv", spec: bytes = SPEC) -> None:
        self.store.put(f"datasets/{model}/{name}", data)
        self.store.put(f"datasets/{model}/dropflow.yaml", spec)

    def new_job(self, model: str) -> str:
        return launched_job(self.jobs, model)

    def relaunch(self, job_id: str) -> int:
        """What the tracker does when an attempt's instance ended: the next attempt."""
        job = self.jobs.transition(job_id, JobState.INTERRUPTED, reason="attempt ended")
        number = len(job.attempts) + 1
        self.jobs.update(
            job_id,
            lambda j: j.attempts.append(Attempt(number=number, instance_id=f"local-{number}")),
        )
        self.jobs.transition(job_id, JobState.LAUNCHING)
        return number

    def card(self, job_id: str) -> Card:
        job = self.jobs.get(job_id)
        return read_card(self.store, job.model, job.version)

    def reference_outputs(self, job_id: str) -> np.ndarray:
        job = self.jobs.get(job_id)
        data = self.store.get(f"models/{job.model}/{job.version}/reference.npz")
        with np.load(io.BytesIO(data)) as reference:
            return reference["probabilities"]

    def text(self, key: str) -> str:
        return self.store.get(key).decode()


class FakeWatcher:
    """An InterruptionWatcher whose notice arrives after `n` stop checks."""

    class _Notice:
        kind = "spot-interruption"
        detail = "terminate at 2026-11-23T10:17:00Z"

    def __init__(self, n: int) -> None:
        self.event = StopAfter(n)
        self.notice = self._Notice()
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def bc_csv() -> bytes:
    data = load_breast_cancer(as_frame=True)
    return data.frame.to_csv(index=False).encode()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def interrupted_job(home: Home) -> dict[str, Any]:
    """bc-resumed: attempt 1 stopped by a spot notice at step 30, attempt 2 run to the end."""
    home.drop("bc-resumed", bc_csv())
    job_id = home.new_job("bc-resumed")
    watcher = FakeWatcher(30)
    first = run_job(job_id, 1, home.store, home.registry, watcher=watcher)
    after_first = home.jobs.get(job_id)
    manifest = json.loads(home.text(f"jobs/bc-resumed/{job_id}/manifest.json"))
    second_attempt = home.relaunch(job_id)
    second = run_job(job_id, second_attempt, home.store, home.registry)
    return {
        "job_id": job_id,
        "codes": (first, second),
        "after_first": after_first,
        "manifest": manifest,
        "watcher": watcher,
    }


@pytest.mark.slow
def test_a_spot_notice_ends_the_attempt_as_interrupted_not_failed(interrupted_job):
    assert interrupted_job["codes"][0] == ExitCode.INTERRUPTED
    job = interrupted_job["after_first"]
    assert job.state == JobState.RUNNING  # the tracker moves it on; nothing failed it
    assert job.attempts[0].exit_reason == "interrupted: spot-interruption"
    assert job.attempts[0].ended_at is not None
    assert job.progress["stage"] == "interrupted"
    assert interrupted_job["watcher"].started and interrupted_job["watcher"].stopped


@pytest.mark.slow
def test_the_notice_is_honoured_with_a_checkpoint_at_the_next_step(interrupted_job):
    # The watcher's event is checked once before training: 30 checks are 29 steps.
    manifest = interrupted_job["manifest"]
    assert manifest["step"] == 29 and manifest["attempt"] == 1
    assert manifest["checkpoint"].endswith("/checkpoints/step-000000029.pt")


@pytest.mark.slow
def test_the_next_attempt_resumes_and_publishes_what_an_uninterrupted_job_would(
    interrupted_job, home
):
    assert interrupted_job["codes"][1] == ExitCode.OK
    home.drop("bc-straight", bc_csv())
    straight = home.new_job("bc-straight")
    assert run_job(straight, 1, home.store, home.registry) == ExitCode.OK
    resumed, uninterrupted = (
        home.reference_outputs(j) for j in (interrupted_job["job_id"], straight)
    )
    assert np.max(np.abs(resumed - uninterrupted)) <= TOLERANCE
    card = home.card(interrupted_job["job_id"])
    assert card.model_extra["training"]["resumed_from_step"] == 29
    assert card.metrics == home.card(straight).metrics


@pytest.mark.slow
def test_the_card_records_both_attempts_and_the_seconds_lost(interrupted_job, home):
    card = home.card(interrupted_job["job_id"])
    first, second = card.attempts
    assert (first["number"], second["number"]) == (1, 2)
    assert first["exit_reason"] == "interrupted: spot-interruption"
    # It checkpointed on the notice: lost is the time between that save and its exit.
    assert 0.0 <= first["seconds_lost"] < 5.0
    assert second["exit_reason"] == "published" and second["seconds_lost"] == 0.0
    assert card.files["curve"] == "curve.png"


@pytest.mark.slow
def test_the_job_log_keeps_a_section_per_attempt(interrupted_job, home):
    job_id = interrupted_job["job_id"]
    log = home.text(f"jobs/bc-resumed/{job_id}/log.txt")
    assert log.index("===== attempt 1,") < log.index("===== attempt 2,")
    assert "ended" in log and "interrupted: spot-interruption at step 29" in log
    assert "resuming from" in log and "published v" in log
    heartbeat = json.loads(home.text(f"jobs/bc-resumed/{job_id}/heartbeat.json"))
    assert heartbeat["attempt"] == 2 and heartbeat["stage"] == "exporting"


@pytest.mark.slow
def test_an_attempt_stopped_after_training_goes_straight_to_export_when_resumed(home):
    home.drop("bc-late", bc_csv())
    job_id = home.new_job("bc-late")
    # 12 epochs of 8 steps: 1 check before training, 96 in it, the 98th after it.
    assert run_job(job_id, 1, home.store, home.registry, stop=StopAfter(97)) == (
        ExitCode.INTERRUPTED
    )
    attempt = home.relaunch(job_id)
    assert run_job(job_id, attempt, home.store, home.registry) == ExitCode.OK
    training = home.card(job_id).model_extra["training"]
    assert training["resumed_from_step"] == training["steps"] == 96
    assert training["checkpoints"] == 0  # nothing left to train, nothing new to store
    history = training["history"]  # the curve still has every epoch
    assert len(history["loss"]) == len(history["accuracy"]) == 12


@pytest.mark.slow
def test_a_checkpoint_of_other_data_is_not_resumed_and_the_log_says_why(home):
    home.drop("bc-changed", bc_csv())
    job_id = home.new_job("bc-changed")
    assert run_job(job_id, 1, home.store, home.registry, stop=StopAfter(20)) == (
        ExitCode.INTERRUPTED
    )
    home.drop("bc-changed", bc_csv()[: len(bc_csv()) // 2].rsplit(b"\n", 1)[0], name="more.csv")
    attempt = home.relaunch(job_id)
    assert run_job(job_id, attempt, home.store, home.registry) == ExitCode.OK
    card = home.card(job_id)
    assert card.model_extra["training"]["resumed_from_step"] is None
    log = home.text(f"jobs/bc-changed/{job_id}/log.txt")
    assert "not resuming from" in log and "the dataset is now" in log
    # Nothing of attempt 1 was carried over: all its running time was lost.
    first = home.jobs.get(job_id).attempts[0]
    assert first.seconds_lost == pytest.approx(first.ended_at - first.started_at, abs=1e-3)


@pytest.mark.slow
def test_a_checkpoint_changed_after_it_was_saved_is_skipped_for_the_previous_one(home):
    home.drop("bc-flipped", bc_csv())
    job_id = home.new_job("bc-flipped")
    # 8 steps an epoch: a checkpoint at an epoch's end, and one at the stop (step 19).
    assert run_job(job_id, 1, home.store, home.registry, stop=StopAfter(20)) == (
        ExitCode.INTERRUPTED
    )
    manifest = json.loads(home.text(f"jobs/bc-flipped/{job_id}/manifest.json"))
    newest = manifest["checkpoint"]
    (previous,) = set(manifest["digests"]) - {newest}
    assert manifest["step"] == 19
    data = home.store.get(newest)
    weights = max(ckpt.loads(data)["model"].values(), key=lambda t: t.numel())
    home.store.put(newest, flip_tensor_byte(data, weights))

    attempt = home.relaunch(job_id)
    assert run_job(job_id, attempt, home.store, home.registry) == ExitCode.OK

    training = home.card(job_id).model_extra["training"]
    assert training["resumed_from_step"] == ckpt.step_of(previous) < 19
    log = home.text(f"jobs/bc-flipped/{job_id}/log.txt")
    assert f"checkpoint {newest} differs from the digest" in log
    assert f"resuming from {previous}" in log


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigterm_stops_python_dash_m_training_with_a_checkpoint_and_exit_75(tmp_path):
    local = Home(tmp_path)
    local.drop("sigterm", bc_csv(), spec=b"training: {epochs: 5000}\n")
    job_id = local.new_job("sigterm")
    env = {
        **os.environ,
        "DROPFLOW_STORE_URL": f"file://{tmp_path}/bucket",
        "DROPFLOW_REGISTRY_URL": f"sqlite://{tmp_path}/registry.db",
        "DROPFLOW_JOB_ID": job_id,
        "DROPFLOW_ATTEMPT": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "training"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        # Bounds for a loaded 2-core machine: starting python and torch, then a checkpoint.
        wait_until(
            lambda: (
                process.poll() is not None
                or local.jobs.get(job_id).progress.get("stage") == "training"
            ),
            300,
            what=lambda: "training to start; output:\n" + "".join(output),
        )
        assert process.poll() is None, "".join(output)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
    assert code == ExitCode.INTERRUPTED, "".join(output)
    job = local.jobs.get(job_id)
    assert job.attempts[0].exit_reason == "interrupted: SIGTERM"
    manifest = json.loads(local.text(f"jobs/sigterm/{job_id}/manifest.json"))
    assert manifest["step"] < 5000 * 8
    assert "SIGTERM received" in local.text(f"jobs/sigterm/{job_id}/log.txt")


def test_a_job_interrupted_twice_remembers_both_resumes_for_its_curve(tmp_path):
    x, y = breast_cancer()
    options = {
        "task": "classification",
        "n_classes": 2,
        "model": ModelSection(family="mlp"),
        "training": TrainingSection(epochs=6, batch_size=64),
    }
    store = open_store(f"file://{tmp_path}/bucket")
    lineage = Lineage(
        job_id="bc-20260101T000000Z-abcdef", attempt=1, data_version="d", spec_hash="s"
    )
    sink = CheckpointStore(store, "bc", lineage)
    first = train_tabular(x, y, sink=sink, stop=StopAfter(7), checkpoint_seconds=0, **options)
    assert not first.completed and first.resumes == []
    found = CheckpointStore(store, "bc", lineage).latest()
    assert found is not None
    second = train_tabular(
        x,
        y,
        resume=found.checkpoint,
        sink=sink,
        stop=StopAfter(11),
        checkpoint_seconds=0,
        **options,
    )
    assert not second.completed and second.resumes == [7]
    found = CheckpointStore(store, "bc", lineage).latest()
    assert found is not None and found.step == 18

    third = train_tabular(x, y, resume=found.checkpoint, **options)

    assert third.completed and third.resumes == [7, 18]
