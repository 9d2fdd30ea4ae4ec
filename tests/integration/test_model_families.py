"""A family defined outside training/ goes the whole way: train, export, publish, promote, serve.

The `echo` family (tests/families/echo_family.py) is registered through the documented hook
(training.families.register) and named by the model's dropflow.yaml. Then the real job on the
local adapters (DirectoryStore, SqliteRegistry), the real promotion and the real prediction
service run it, with no change to the loop, checkpoints, interruption handling or publishing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dropflow.ports import ObjectStore, Registry
from dropflow.promotion.gate import promote
from dropflow.records.jobs import ExitCode, JobState, JobStore
from dropflow.serving.service import InvalidInstances, ModelCache, PredictionService
from dropflow.vocabulary.card import Feature, read_card
from dropflow.wiring import open_registry, open_store
from tests.families.echo_family import EchoFamily
from tests.training_jobs import launched_job
from training import families
from training.job import run_job

MODEL = "echo"
SPEC = b"family: echo\ntraining: {epochs: 40, batch_size: 32, learning_rate: 0.05}\n"


@pytest.fixture
def echo() -> Iterator[None]:
    families.register(EchoFamily)
    yield
    families.unregister(EchoFamily.name)


@pytest.fixture
def home(tmp_path: Path) -> tuple[ObjectStore, Registry]:
    store = open_store(f"file://{tmp_path}/bucket")
    values = "\n".join(f"{v:.3f}" for v in np.linspace(-4.0, 6.0, 201))
    store.put(f"datasets/{MODEL}/values.csv", f"value\n{values}\n".encode())
    store.put(f"datasets/{MODEL}/dropflow.yaml", SPEC)
    return store, open_registry(f"sqlite://{tmp_path}/registry.db")


def test_a_registered_family_trains_publishes_is_promoted_and_serves(echo, home):
    store, registry = home
    jobs = JobStore(registry)
    job_id = launched_job(jobs, MODEL)

    assert run_job(job_id, 1, store, registry) == ExitCode.OK

    job = jobs.get(job_id)
    assert job.state == JobState.PUBLISHED, job.reason
    card = read_card(store, MODEL, job.version)
    assert card.task == "regression" and card.target == "value"
    assert card.features == [Feature(name="value", dtype="number", nullable=False)]
    assert card.model_extra["training"]["family"] == "echo"
    assert card.parity.passed
    assert card.metrics.holdout["rmse"] < 0.05 < card.metrics.baseline["rmse"]

    result = promote(MODEL, job.version, store, registry)
    assert result.decision == "approved", result.reason

    service = PredictionService(ModelCache(store, registry))
    answer = service.predict(MODEL, [[3.0], [-1.5]])
    assert answer["version"] == job.version
    assert answer["predictions"] == pytest.approx([3.0, -1.5], abs=0.05)
    assert service.predict(MODEL, [{"value": 0.25}])["predictions"] == pytest.approx(
        [0.25], abs=0.05
    )
    # The family's input schema is what serving decodes with: echo's value may not be null.
    with pytest.raises(InvalidInstances, match="row 0, feature 'value': expected a number"):
        service.predict(MODEL, [[None]])


def test_a_spec_naming_a_family_nobody_registered_fails_the_job_naming_the_key(home):
    store, registry = home
    jobs = JobStore(registry)
    job_id = launched_job(jobs, MODEL)

    assert run_job(job_id, 1, store, registry) == ExitCode.USER_ERROR

    job = jobs.get(job_id)
    assert job.state == JobState.FAILED
    assert "dropflow.yaml: family: unknown family 'echo'; choose one of image, tabular, text" in (
        job.reason or ""
    )
    assert store.list(f"models/{MODEL}/") == []
