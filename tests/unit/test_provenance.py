"""Promotion trusts only what a training job published: the card names a job of the same model
that recorded this version, and card.json, model.onnx and reference.npz hash to the digests
that job recorded. Anything else is rejected with a reason a person can act on, the champion
keeps serving, and the "Model Rejected" event says why."""

from __future__ import annotations

import json

import pytest

from dropflow.adapters.local.event_log import JsonLinesEventPublisher
from dropflow.promotion.gate import promote
from dropflow.records.catalog import Catalog
from dropflow.records.jobs import JobStore
from dropflow.vocabulary.card import artifact_key, card_key
from dropflow.vocabulary.digests import sha256_hex
from dropflow.vocabulary.events import REJECTED
from tests.fakes_serving import publish, version_id
from tests.unit.fakes import MemoryStore

V1, V2 = version_id(1), version_id(2)


@pytest.fixture
def champion(store, registry) -> str:
    """iris V1, published by its job and promoted."""
    publish(store, registry, "iris", V1, value=0.9)
    assert promote("iris", V1, store, registry).decision == "approved"
    return V1


@pytest.fixture
def events(tmp_path) -> JsonLinesEventPublisher:
    return JsonLinesEventPublisher(tmp_path / "events.jsonl")


def rejected_events(events: JsonLinesEventPublisher) -> list[dict]:
    return [e["detail"] for e in events.read() if e["detail-type"] == REJECTED]


def test_a_version_folder_no_job_published_is_rejected_and_the_champion_stays(
    store, registry, champion, events
):
    # Given a folder written by hand: a card claiming 0.99, a sound graph, no job behind it
    publish(store, None, "iris", V2, value=0.99, seed=1)

    result = promote("iris", V2, store, registry, events)

    assert result.decision == "rejected"
    assert result.reason.startswith("no job published this version: its card.json names job")
    assert "which the registry does not know" in result.reason
    assert result.champion_after == champion
    (event,) = rejected_events(events)
    assert (event["version"], event["reason"]) == (V2, result.reason)


def test_a_card_naming_a_job_of_another_model_is_rejected(store, registry, champion):
    other = publish(store, registry, "other", V1)
    publish(store, None, "iris", V2, value=0.99, card_extra={"job_id": other.job_id})

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert result.reason == (
        f"no job of iris published this version: its card.json names job {other.job_id}, "
        "a job of model other"
    )
    assert result.champion_after == champion


def test_a_card_naming_a_job_that_published_another_version_is_rejected(store, registry, champion):
    first = JobStore(registry).for_model("iris")[0]
    publish(store, None, "iris", V2, value=0.99, card_extra={"job_id": first.job_id})

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert result.reason == (
        f"no job published this version: job {first.job_id} recorded version {V1}, not {V2}"
    )


def swap_in(store, model: str, version: str, names: tuple[str, ...], seed: int) -> None:
    """Replace files of a published version with those of another sound graph (a graph and
    its own evidence, so that parity alone would pass them)."""
    elsewhere = MemoryStore()
    publish(elsewhere, None, model, version, seed=seed)
    for name in names:
        store.put(
            artifact_key(model, version, name), elsewhere.get(artifact_key(model, version, name))
        )


def test_a_model_onnx_swapped_after_publish_is_rejected_naming_the_job(store, registry, champion):
    card = publish(store, registry, "iris", V2, value=0.95, seed=1)
    swap_in(store, "iris", V2, ("model.onnx", "reference.npz"), seed=7)

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert result.reason.startswith(f"model.onnx differs from what job {card.job_id} published")
    assert result.champion_after == champion


def test_a_reference_swapped_after_publish_is_rejected(store, registry, champion):
    card = publish(store, registry, "iris", V2, value=0.95, seed=1)
    swap_in(store, "iris", V2, ("reference.npz",), seed=7)

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert result.reason.startswith(f"reference.npz differs from what job {card.job_id} published")


def test_a_card_edited_after_publish_is_rejected(store, registry, champion):
    card = publish(store, registry, "iris", V2, value=0.5, seed=1)
    edited = json.loads(store.get(card_key("iris", V2)))
    edited["metrics"]["holdout"]["accuracy"] = 0.99
    edited["promotion"] = {"tolerance": 1.0}
    store.put(card_key("iris", V2), json.dumps(edited).encode())

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert result.reason.startswith(f"card.json differs from what job {card.job_id} published")


def test_a_job_that_recorded_no_digests_cannot_have_its_version_promoted(store, registry):
    card = publish(store, registry, "iris", V1)
    JobStore(registry).update(card.job_id, lambda job: job.model_copy(update={"digests": {}}))

    result = promote("iris", V1, store, registry)

    assert result.decision == "rejected"
    assert f"job {card.job_id} recorded no digests for {V1}" in result.reason
    assert "retrain iris" in result.reason


def test_the_approved_versions_record_carries_the_digests_of_the_bytes_read(store, registry):
    publish(store, registry, "iris", V1)

    result = promote("iris", V1, store, registry)

    assert result.decision == "approved"
    record = Catalog(registry).version("iris", V1)
    assert record is not None
    assert record.digests == {
        name: sha256_hex(store.get(artifact_key("iris", V1, name)))
        for name in ("model.onnx", "reference.npz", "card.json")
    }
