"""Serving loads only the files a version's job published: card.json and model.onnx must hash
to the digests on the version's record. A file changed after approval is refused with a 503
naming it (UntrustedModel), an ERROR log and the ModelFileMismatch metric."""

from __future__ import annotations

import json
import logging

import pytest

from dropflow.errors import NotReadyError
from dropflow.promotion.gate import promote
from dropflow.records.catalog import Catalog
from dropflow.serving.service import (
    FILE_MISMATCH_METRIC,
    REFUSAL_HOLD_SECONDS,
    ModelCache,
    PredictionService,
    UntrustedModel,
)
from dropflow.vocabulary.card import artifact_key, card_key
from tests.fakes_serving import Counting, ManualClock, publish, version_id
from tests.unit.fakes import MemoryStore

FEATURES = ["mean radius", "mean texture", "mean area", "worst smoothness"]
CLASSES = ["benign", "malignant"]
ROWS = [[14.1, 19.3, 654.9, 0.13], [20.6, 17.8, 1326.0, 0.12]]
V1 = version_id(1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def champion(store, registry) -> str:
    """The job id of cancer V1, published and approved."""
    card = publish(store, registry, "cancer", V1, features=FEATURES, classes=CLASSES)
    assert promote("cancer", V1, store, registry).decision == "approved"
    return card.job_id


@pytest.fixture
def metrics_on(monkeypatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")


def service_for(store, registry, clock) -> PredictionService:
    return PredictionService(ModelCache(store, registry, champion_ttl=5.0, clock=clock))


def another_graph(model: str = "cancer", seed: int = 7) -> bytes:
    """A sound graph of the same shape that no job of `model` published."""
    elsewhere = MemoryStore()
    publish(elsewhere, None, model, V1, features=FEATURES, classes=CLASSES, seed=seed)
    return elsewhere.get(artifact_key(model, V1, "model.onnx"))


def emf_lines(out: str) -> list[dict]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line and FILE_MISMATCH_METRIC in line]


def test_a_model_replaced_after_approval_is_refused_with_an_error_log_and_a_metric(
    store, registry, clock, champion, metrics_on, caplog, capsys
):
    # Given a champion whose model.onnx was replaced after promotion approved it
    store.put(artifact_key("cancer", V1, "model.onnx"), another_graph())
    service = service_for(store, registry, clock)

    # When a client asks for a prediction
    with caplog.at_level(logging.ERROR), pytest.raises(UntrustedModel) as refused:
        service.predict("cancer", ROWS)

    # Then it is refused (a 503: UntrustedModel is a NotReadyError) naming the file and the job
    message = str(refused.value)
    assert isinstance(refused.value, NotReadyError)
    assert message.startswith(f"version {V1!r} of model 'cancer' is not served: model.onnx")
    assert f"differs from what job {champion} published" in message
    assert "`dropflow models rollback cancer`" in message
    # and logged once at ERROR, with what a person needs to find it
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.getMessage() == "refused a model file that is not what its job published"
    assert (error.model, error.version, error.file) == ("cancer", V1, "model.onnx")
    # and counted: one EMF line, dimension service, the file beside it
    (metric,) = emf_lines(capsys.readouterr().out)
    assert metric["_aws"]["CloudWatchMetrics"] == [
        {
            "Namespace": "dropflow",
            "Dimensions": [["service"]],
            "Metrics": [{"Name": FILE_MISMATCH_METRIC, "Unit": "Count"}],
        }
    ]
    assert metric[FILE_MISMATCH_METRIC] == [1.0]
    assert (metric["service"], metric["model"], metric["version"], metric["file"]) == (
        "dropflow",
        "cancer",
        V1,
        "model.onnx",
    )


def test_a_card_edited_after_approval_is_refused(store, registry, clock, champion):
    # Swapped class labels would turn every answer around.
    card = json.loads(store.get(card_key("cancer", V1)))
    card["classes"] = list(reversed(card["classes"]))
    store.put(card_key("cancer", V1), json.dumps(card).encode())

    with pytest.raises(UntrustedModel, match=f"card.json differs from what job {champion}"):
        service_for(store, registry, clock).predict("cancer", ROWS)


def test_a_refusal_is_answered_from_memory_then_the_files_are_read_again(
    store, registry, clock, champion, caplog
):
    genuine = store.get(artifact_key("cancer", V1, "model.onnx"))
    store.put(artifact_key("cancer", V1, "model.onnx"), another_graph())
    counted = Counting(store)
    service = PredictionService(ModelCache(counted, registry, champion_ttl=5.0, clock=clock))
    with caplog.at_level(logging.ERROR), pytest.raises(UntrustedModel):
        service.predict("cancer", ROWS)
    reads = counted.calls["get"]

    # Within the hold, the same answer without reading the model again or logging again
    clock.advance(REFUSAL_HOLD_SECONDS - 1)
    with pytest.raises(UntrustedModel):
        service.predict("cancer", ROWS)
    assert counted.calls["get"] == reads
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

    # Once the file is restored and the hold is over, the version is served again
    store.put(artifact_key("cancer", V1, "model.onnx"), genuine)
    clock.advance(2)
    assert service.predict("cancer", ROWS)["version"] == V1


def test_a_session_loaded_before_the_file_changed_keeps_serving_the_jobs_graph(
    store, registry, clock, champion
):
    service = service_for(store, registry, clock)
    before = service.predict("cancer", ROWS)
    store.put(artifact_key("cancer", V1, "model.onnx"), another_graph())

    assert service.predict("cancer", ROWS) == before


def test_a_version_approved_without_digests_is_not_served(store, registry, clock, champion):
    catalog = Catalog(registry)
    record = catalog.version("cancer", V1)
    catalog.record_version(record.model_copy(update={"digests": {}}))

    with pytest.raises(UntrustedModel, match="its record carries no digests"):
        service_for(store, registry, clock).predict("cancer", ROWS)


def test_a_champion_whose_record_is_not_written_yet_is_not_ready_and_not_an_alarm(
    store, registry, clock, caplog
):
    # Promotion switches the pointer first and records the decision next.
    publish(store, registry, "cancer", V1, features=FEATURES, classes=CLASSES)
    Catalog(registry).switch_champion("cancer", V1, expected=None, route="lambda")

    with caplog.at_level(logging.ERROR), pytest.raises(NotReadyError) as raised:
        service_for(store, registry, clock).predict("cancer", ROWS)

    assert not isinstance(raised.value, UntrustedModel)
    assert "still being recorded by promotion" in str(raised.value)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
