"""The training job end to end on the local adapters: data in the bucket -> published version.

Real DirectoryStore and SqliteRegistry in a temporary folder; real datasets bundled with
scikit-learn (no network). A job and its first attempt are created as the launcher would.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris

from dropflow.ports import ObjectInfo, ObjectStore, Registry
from dropflow.records.jobs import Attempt, ExitCode, Job, JobState, JobStore
from dropflow.vocabulary.card import Card, read_card
from dropflow.wiring import open_registry, open_store
from tests.training_jobs import launched_job
from training import data as training_data
from training import heartbeat as training_heartbeat
from training import job as training_job
from training import reading as training_reading
from training.export import check_parity
from training.job import run_job

REPO = Path(__file__).resolve().parents[2]


class RecordingStore:
    """Delegates to a real store and remembers the order of writes; `before_put` (if set) is
    called with each key before it is written."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.puts: list[str] = []
        self.before_put: Callable[[str], None] | None = None

    def put(self, key: str, data: bytes, **kwargs: Any) -> ObjectInfo:
        if self.before_put is not None:
            self.before_put(key)
        self.puts.append(key)
        return self.inner.put(key, data, **kwargs)

    def put_file(self, key: str, path: Path, **kwargs: Any) -> ObjectInfo:
        self.puts.append(key)
        return self.inner.put_file(key, path, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Home:
    """A bucket and a registry in one folder, and helpers to run jobs against them."""

    def __init__(self, root: Path) -> None:
        self.store = RecordingStore(open_store(f"file://{root}/bucket"))
        self.registry: Registry = open_registry(f"sqlite://{root}/registry.db")
        self.jobs = JobStore(self.registry)
        # What the registry said about each card's job just before the card was written.
        self.job_at_card: dict[str, Job] = {}
        self.store.before_put = self._note_job_at_card

    def _note_job_at_card(self, key: str) -> None:
        parts = key.split("/")
        if parts[0] == "models" and parts[-1] == "card.json":
            for job in self.jobs.for_model(parts[1]):
                if job.version == parts[2]:
                    self.job_at_card[key] = job

    def drop(self, model: str, name: str, data: bytes) -> None:
        self.store.inner.put(f"datasets/{model}/{name}", data)

    def new_job(self, model: str, state: JobState = JobState.LAUNCHING) -> str:
        return launched_job(self.jobs, model, data_version=f"{model}-data-v1", state=state)

    def run(self, model: str) -> tuple[int, Job]:
        job_id = self.new_job(model)
        code = run_job(job_id, 1, self.store, self.registry)
        return code, self.jobs.get(job_id)

    def card(self, job: Job) -> Card:
        return read_card(self.store, job.model, job.version)

    def published(self, model: str) -> list[str]:
        return [info.key for info in self.store.list(f"models/{model}/")]


def breast_cancer_csv() -> bytes:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["diagnosis"] = [str(data.target_names[i]) for i in data.target]
    return frame.to_csv(index=False).encode()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def breast_cancer(home: Home) -> tuple[int, Job]:
    # The label is `diagnosis`, not a name taken as the target: the spec says which it is.
    home.drop("breast-cancer", "dropflow.yaml", b"target: diagnosis\n")
    home.drop("breast-cancer", "data.csv", breast_cancer_csv())
    return home.run("breast-cancer")


# --------------------------------------------------------------------------- publishing
@pytest.mark.slow
def test_breast_cancer_publishes_an_accurate_model(breast_cancer, home):
    code, job = breast_cancer
    assert code == ExitCode.OK
    assert job.state == JobState.PUBLISHED
    card = home.card(job)
    assert card.task == "classification"
    assert card.target == "diagnosis"
    assert card.classes == ["benign", "malignant"]
    assert len(card.features) == 30 and card.features[0].name == "mean radius"
    assert card.metrics.primary == "accuracy"
    assert card.metrics.holdout["accuracy"] >= 0.95
    assert card.metrics.holdout["accuracy"] > card.metrics.baseline["accuracy"]
    assert card.metrics.holdout_rows + card.metrics.train_rows == 569


@pytest.mark.slow
def test_card_json_is_written_last_after_the_model_and_its_evidence(breast_cancer, home):
    _, job = breast_cancer
    prefix = f"models/breast-cancer/{job.version}/"
    written = [key.removeprefix(prefix) for key in home.store.puts if key.startswith(prefix)]
    assert written == ["model.onnx", "reference.npz", "curve.png", "card.json"]
    assert sorted(home.published("breast-cancer")) == sorted(prefix + name for name in written)


@pytest.mark.slow
def test_the_job_records_its_files_digests_before_card_json_appears(breast_cancer, home):
    _, job = breast_cancer
    prefix = f"models/breast-cancer/{job.version}/"
    files = {
        name: hashlib.sha256(home.store.get(prefix + name)).hexdigest()
        for name in ("model.onnx", "reference.npz", "card.json")
    }
    assert job.digests == files
    # card.json starts promotion: by then the job already names the version and its digests.
    before = home.job_at_card[prefix + "card.json"]
    assert before.state == JobState.EXPORTING
    assert (before.version, before.digests) == (job.version, files)


@pytest.mark.slow
def test_the_card_records_parity_lineage_timings_and_attempts(breast_cancer, home):
    _, job = breast_cancer
    card = home.card(job)
    assert card.version == job.version and card.job_id == job.job_id
    assert card.parity.passed and card.parity.argmax_equal
    assert card.parity.max_abs_diff <= card.parity.tolerance == 1e-4
    assert card.parity.rows == card.metrics.holdout_rows
    assert card.data_version == "breast-cancer-data-v1"
    assert len(card.spec_hash) == 64
    assert set(card.timings) == {"load", "train", "export", "parity", "total"}
    assert 0 < card.timings["parity"] <= card.timings["export"]
    # Each stage is timed within the whole (never a wall-clock bound: the machine may be busy).
    stages = card.timings["load"] + card.timings["train"] + card.timings["export"]
    assert 0 < stages <= card.timings["total"] + 1e-3
    onnx_info = home.store.head(f"models/breast-cancer/{job.version}/model.onnx")
    assert onnx_info is not None and card.model_bytes == onnx_info.size
    assert [a["number"] for a in card.attempts] == [1]
    assert card.attempts[0]["instance_id"] == "local-1"
    assert card.attempts[0]["exit_reason"] == "published"
    assert job.attempts[0].started_at is not None and job.attempts[0].ended_at is not None


@pytest.mark.slow
def test_the_training_curve_is_published_and_named_in_the_card(breast_cancer, home):
    _, job = breast_cancer
    card = home.card(job)
    assert card.files["curve"] == "curve.png"
    png = home.store.get(f"models/breast-cancer/{job.version}/curve.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    training = card.model_extra["training"]
    history = training["history"]
    epochs = training["epochs"]
    assert len(history["loss"]) == len(history["accuracy"]) == epochs
    assert len(history["validation_loss"]) == epochs
    # The published weights are the best epoch's (then calibrated, which moves an ensemble's
    # averaged answer by a row at most here).
    best = training["best_epoch"]
    assert 1 <= best <= epochs
    assert history["accuracy"][best - 1] == pytest.approx(
        card.metrics.holdout["accuracy"], abs=0.01
    )


@pytest.mark.slow
def test_the_job_leaves_its_log_heartbeat_and_last_two_checkpoints(breast_cancer, home):
    _, job = breast_cancer
    prefix = f"jobs/breast-cancer/{job.job_id}/"
    names = {info.key.removeprefix(prefix) for info in home.store.list(prefix)}
    checkpoints = sorted(name for name in names if name.startswith("checkpoints/"))
    # The last checkpoint is the finished one: the best weights, calibrated, at the last step.
    training = home.card(job).model_extra["training"]
    last = f"checkpoints/step-{training['steps']:09d}.pt"
    assert len(checkpoints) == 2 and checkpoints[-1] == last
    assert {"manifest.json", "heartbeat.json", "log.txt"} <= names
    log = home.store.get(prefix + "log.txt").decode()
    assert "===== attempt 1," in log and f"published {job.version}" in log
    assert f"epoch {training['epochs']}/{training['epoch_budget']}" in log
    assert "split: 365 training, 91 validation, 113 holdout rows" in log
    assert "calibrated on 91 validation rows" in log


@pytest.mark.slow
def test_heartbeats_report_training_progress(home, monkeypatch):
    monkeypatch.setattr(training_heartbeat, "HEARTBEAT_SECONDS", 0.0)  # at every step
    monkeypatch.setattr(training_reading, "FIRST_REPORT_SECONDS", 3600.0)  # none while reading
    home.drop("beats", "iris.csv", load_iris(as_frame=True).frame.to_csv(index=False).encode())
    home.drop("beats", "dropflow.yaml", b"training: {epochs: 3}\n")
    code, job = home.run("beats")
    assert code == ExitCode.OK, job.reason
    key = f"jobs/beats/{job.job_id}/heartbeat.json"
    # loading, training, one per step (96 training rows in batches of 32: 3 an epoch), the
    # end, exporting
    assert home.store.puts.count(key) == 2 + 9 + 1 + 1
    beat = json.loads(home.store.get(key))
    assert beat["stage"] == "exporting" and beat["attempt"] == 1
    assert (beat["epoch"], beat["epochs"], beat["step"], beat["steps"]) == (3, 3, 9, 9)
    assert beat["samples_per_second"] > 0 and beat["eta_seconds"] == 0


@pytest.mark.slow
def test_heartbeats_report_the_rows_read_and_the_time_left_while_loading(home, monkeypatch):
    monkeypatch.setattr(training_heartbeat, "HEARTBEAT_SECONDS", 0.0)
    monkeypatch.setattr(training_reading, "FIRST_REPORT_SECONDS", 0.0)  # at every block read
    monkeypatch.setattr(training_data, "_CSV_BLOCK_BYTES", 512)  # a large file's many blocks
    monkeypatch.setattr(training_data, "_BLOCK_ROWS", 16)
    home.drop("reading", "iris.csv", load_iris(as_frame=True).frame.to_csv(index=False).encode())
    home.drop("reading", "dropflow.yaml", b"training: {epochs: 1}\n")
    beats: list[dict[str, Any]] = []
    put = home.store.put

    def recording_put(key: str, data: bytes, **kwargs: Any) -> ObjectInfo:
        if key.endswith("/heartbeat.json"):
            beats.append(json.loads(data))
        return put(key, data, **kwargs)

    monkeypatch.setattr(home.store, "put", recording_put)
    code, job = home.run("reading")

    assert code == ExitCode.OK, job.reason
    reading = [beat for beat in beats if "rows_read" in beat]
    assert len(reading) >= 10 and {beat["stage"] for beat in reading} == {"loading"}
    rows = [beat["rows_read"] for beat in reading]
    fractions = [beat["read_fraction"] for beat in reading]
    assert rows == sorted(rows) and rows[-1] == 150
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(isinstance(beat["load_eta_seconds"], int) for beat in reading)
    after = beats[beats.index(reading[-1]) + 1 :]
    assert after[0]["stage"] == "training"
    assert not any("rows_read" in beat for beat in after)


@pytest.mark.slow
def test_the_onnx_graph_reproduces_the_reference_for_any_batch_size(breast_cancer, home):
    _, job = breast_cancer
    base = f"models/breast-cancer/{job.version}/"
    model_bytes = home.store.get(base + "model.onnx")
    graph = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(graph)
    (graph_input,) = graph.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "input" and dims[0].dim_param and dims[1].dim_value == 30
    assert [o.name for o in graph.graph.output] == ["probabilities"]

    with np.load(io.BytesIO(home.store.get(base + "reference.npz"))) as reference:
        inputs, outputs = reference["input"], reference["probabilities"]
        target = reference["target"]
    assert target.shape == (len(inputs),) and set(np.unique(target)) <= {0, 1}
    assert inputs.dtype == np.float32 and outputs.shape == (len(inputs), 2)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    for rows in (inputs[:1], inputs[:7], inputs):
        (got,) = session.run(None, {"input": rows})
        assert np.max(np.abs(got - outputs[: len(rows)])) <= 1e-4


@pytest.mark.slow
def test_digits_reach_the_accuracy_target_with_integer_classes(home):
    frame = load_digits(as_frame=True).frame  # 64 pixel columns, then `target`
    home.drop("digits", "digits.csv", frame.to_csv(index=False).encode())
    code, job = home.run("digits")
    assert code == ExitCode.OK, job.reason
    card = home.card(job)
    assert card.classes == list(range(10))
    assert card.metrics.holdout["accuracy"] >= 0.95


@pytest.mark.slow
def test_a_parquet_regression_beats_the_mean_baseline(home):
    frame = load_diabetes(as_frame=True).frame
    frame["target"] = frame["target"].astype(float)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    home.drop("diabetes", "diabetes.parquet", buffer.getvalue())
    code, job = home.run("diabetes")
    assert code == ExitCode.OK, job.reason
    card = home.card(job)
    assert card.task == "regression" and card.classes is None
    assert card.metrics.primary == "rmse"
    assert card.metrics.holdout["rmse"] < card.metrics.baseline["rmse"]
    assert card.parity.passed and card.parity.argmax_equal is None
    with np.load(io.BytesIO(home.store.get(f"models/diabetes/{job.version}/reference.npz"))) as ref:
        assert ref["prediction"].shape == (card.metrics.holdout_rows,)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_holdout_metrics(breast_cancer, home):
    _, first = breast_cancer
    code, second = home.run("breast-cancer")
    assert code == ExitCode.OK
    assert second.version != first.version
    assert home.card(second).metrics == home.card(first).metrics


# --------------------------------------------------------------------------- failures
def assert_failed_without_publishing(home: Home, code: int, job: Job, *needles: str) -> None:
    assert code == ExitCode.USER_ERROR
    assert job.state == JobState.FAILED
    assert job.version is None
    for needle in needles:
        assert needle in (job.reason or "")
    assert (job.attempts[0].exit_reason or "").startswith("failed: ")
    assert home.published(job.model) == []


def test_an_invalid_spec_fails_the_job_naming_the_key(home, capsys):
    home.drop("bad-spec", "data.csv", b"a,b,target\n1,2,x\n3,4,y\n")
    home.drop("bad-spec", "dropflow.yaml", b"training:\n  epochs: 0\n")
    code, job = home.run("bad-spec")
    assert_failed_without_publishing(
        home, code, job, "datasets/bad-spec/dropflow.yaml: training.epochs: Input should be"
    )
    assert "training.epochs" in capsys.readouterr().err


def test_a_table_with_no_column_to_predict_fails_the_job_listing_the_columns(home, capsys):
    # The training job's own check, for a job that got past the launcher (or a data file
    # replaced after the launch): nothing is guessed from the columns' order.
    home.drop("penguins", "data.csv", b"species,bill,year\nAdelie,39.1,2007\nGentoo,46.1,2008\n")
    code, job = home.run("penguins")
    assert_failed_without_publishing(
        home, code, job, "which column to predict is not known: no column is named target,"
    )
    assert "available columns: species, bill, year" in (job.reason or "")
    assert "datasets/penguins/dropflow.yaml" in (job.reason or "")
    assert "`target: <column>`" in capsys.readouterr().err


def test_a_broken_csv_row_fails_the_job_naming_file_line_and_column(home):
    home.drop("broken-row", "data.csv", b"a,b,target\n1,2,x\n3,4,y\n5,six,x\n7,8,y\n")
    code, job = home.run("broken-row")
    assert_failed_without_publishing(
        home, code, job, "datasets/broken-row/data.csv, line 4, column 'b': 'six' is not a number"
    )


@pytest.mark.slow
def test_a_parity_failure_fails_the_job_and_publishes_nothing(home, monkeypatch):
    iris = load_iris(as_frame=True).frame
    home.drop("parity", "iris.csv", iris.to_csv(index=False).encode())

    def impossible(path, network, inputs, **_):
        return check_parity(path, network, inputs, tolerance=-1.0)  # no diff is <= -1

    monkeypatch.setattr(training_job, "check_parity", impossible)
    code, job = home.run("parity")
    assert_failed_without_publishing(home, code, job, "ONNX parity check failed")


def test_an_unexpected_error_is_recorded_as_a_crash_and_leaves_the_state(home, monkeypatch):
    home.drop("crash", "data.csv", b"a,target\n1,x\n2,y\n")

    def unreachable_bucket(key: str) -> bytes:
        raise ConnectionError("bucket unreachable")

    monkeypatch.setattr(home.store, "get", unreachable_bucket, raising=False)
    code, job = home.run("crash")
    assert code == ExitCode.CRASHED
    assert job.state == JobState.RUNNING  # the tracker decides about another attempt
    assert job.attempts[0].exit_reason == "crashed: ConnectionError: bucket unreachable"
    assert home.published("crash") == []


def test_a_job_that_is_already_over_is_left_alone(home):
    job_id = home.new_job("done", state=JobState.QUEUED)
    home.jobs.transition(job_id, JobState.FAILED, reason="cancelled")
    assert run_job(job_id, 1, home.store, home.registry) == ExitCode.OK
    assert home.jobs.get(job_id).reason == "cancelled"


def test_an_attempt_replaced_by_a_later_one_does_nothing(home):
    job_id = home.new_job("replaced")
    home.jobs.update(job_id, lambda job: job.attempts.append(Attempt(number=2)))
    assert run_job(job_id, 1, home.store, home.registry) == ExitCode.OK
    assert home.jobs.get(job_id).state == JobState.LAUNCHING


# --------------------------------------------------------------------------- entrypoint
@pytest.mark.slow
def test_python_dash_m_training_reads_its_job_from_the_environment(tmp_path):
    root = tmp_path / "home"
    local = Home(root)
    local.drop("entry", "data.csv", b"a,target\n1,x\n2,y\n")
    local.drop("entry", "dropflow.yaml", b"targte: a\n")
    job_id = local.new_job("entry")
    env = {
        **os.environ,
        "DROPFLOW_STORE_URL": f"file://{root}/bucket",
        "DROPFLOW_REGISTRY_URL": f"sqlite://{root}/registry.db",
        "DROPFLOW_JOB_ID": job_id,
        "DROPFLOW_ATTEMPT": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "training"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == ExitCode.USER_ERROR, done.stderr
    assert "targte: unknown key" in done.stderr
    job = local.jobs.get(job_id)
    assert job.state == JobState.FAILED and "targte" in (job.reason or "")
    assert (job.attempts[0].exit_reason or "").startswith("failed: ")


@pytest.mark.slow
def test_the_card_carries_the_cost_ledger_of_the_attempts_up_to_publish(home):
    home.drop("iris-cost", "data.csv", load_iris(as_frame=True).frame.to_csv(index=False).encode())
    job_id = launched_job(
        home.jobs,
        "iris-cost",
        instance_id="i-0abc",
        instance_type="g6.xlarge",
        price_per_hour=0.30,
        on_demand_price_per_hour=1.00,
        launched_at=time.time() - 3600.0,  # the instance has billed for an hour before training
    )

    assert run_job(job_id, 1, home.store, home.registry) == ExitCode.OK

    cost = home.card(home.jobs.get(job_id)).cost
    assert cost is not None and cost["unpriced_attempts"] == 0
    assert cost["seconds_run"] >= 3600
    assert cost["cost_usd"] == pytest.approx(0.30 * cost["seconds_run"] / 3600, rel=1e-3)
    assert cost["on_demand_equivalent_usd"] == pytest.approx(cost["seconds_run"] / 3600, rel=1e-3)
    assert cost["savings_percent"] == pytest.approx(70.0)
