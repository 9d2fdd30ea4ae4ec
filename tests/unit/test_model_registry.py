"""Registry operations: list versions, show one, roll the champion back (served within TTL)."""

from __future__ import annotations

import numpy as np
import pytest

from dropflow.errors import NotFoundError
from dropflow.promotion.gate import promote
from dropflow.promotion.rollback import RollbackRefused, list_versions, rollback, show_version
from dropflow.records.catalog import Catalog
from dropflow.serving.service import ModelCache, PredictionService
from dropflow.vocabulary.card import artifact_key
from tests.fakes_serving import publish, version_id

V1, V2, V3 = version_id(1), version_id(2), version_id(3)
ROW = [[0.5, -1.0, 2.0, 0.3]]


@pytest.fixture
def two_champions(store, registry):
    publish(store, registry, "m", V1, value=0.9, seed=0)
    publish(store, registry, "m", V2, value=0.95, seed=1)
    promote("m", V1, store, registry)
    promote("m", V2, store, registry)
    return store, registry


def test_rollback_restores_the_previous_champion_and_serving_follows(two_champions):
    store, registry = two_champions
    service = PredictionService(ModelCache(store, registry, champion_ttl=0))
    before = service.predict("m", ROW)

    result = rollback("m", store, registry)

    after = service.predict("m", ROW)
    assert (result.champion_before, result.champion_after) == (V2, V1)
    assert (before["version"], after["version"]) == (V2, V1)
    assert not np.allclose(before["probabilities"], after["probabilities"])
    history = Catalog(registry).changes("m")
    assert [(c.action, c.version) for c in history] == [
        ("promotion", V1),
        ("promotion", V2),
        ("rollback", V1),
    ]


def test_without_previous_the_newest_older_approved_version_is_used(store, registry):
    for n, v in enumerate((V1, V2, V3)):
        publish(store, registry, "m", v, value=0.9 + n / 100, seed=n)
        promote("m", v, store, registry)
    Catalog(registry).switch_champion(
        "m", V3, expected=Catalog(registry).champion("m"), route="lambda"
    )
    assert Catalog(registry).champion("m").previous == V3  # a pointer without a usable previous

    assert rollback("m", store, registry).champion_after == V3  # previous == current: no-op
    registry.put("MODEL#m", "CHAMPION", {"model": "m", "version": V3, "since": 1.0})

    assert rollback("m", store, registry).champion_after == V2


def test_rollback_to_a_named_version(two_champions):
    store, registry = two_champions
    publish(store, registry, "m", V3, value=0.99, seed=2)
    promote("m", V3, store, registry)

    result = rollback("m", store, registry, to_version=V1)

    assert result.champion_after == V1
    assert Catalog(registry).champion("m").version == V1


def test_rollback_to_an_unknown_version_names_it(two_champions):
    store, registry = two_champions
    unknown = version_id(9)

    with pytest.raises(NotFoundError, match=unknown):
        rollback("m", store, registry, to_version=unknown)
    assert Catalog(registry).champion("m").version == V2


def test_rollback_to_a_parity_failure_is_refused(two_champions):
    store, registry = two_champions
    publish(store, registry, "m", V3, skew_reference=0.05)
    promote("m", V3, store, registry)

    with pytest.raises(RollbackRefused, match="fails the parity re-check"):
        rollback("m", store, registry, to_version=V3)
    assert Catalog(registry).champion("m").version == V2


def test_rollback_to_a_version_rejected_on_metrics_is_approved_and_served(store, registry):
    publish(store, registry, "m", V1, value=0.9, seed=0)
    publish(store, registry, "m", V2, value=0.5, seed=1)
    promote("m", V1, store, registry)
    assert promote("m", V2, store, registry).decision == "rejected"

    result = rollback("m", store, registry, to_version=V2)

    assert "was rejected" in result.reason
    assert Catalog(registry).version("m", V2).decision == "approved"
    service = PredictionService(ModelCache(store, registry, champion_ttl=0))
    assert service.predict("m", ROW)["version"] == V2


def test_rollback_to_a_version_whose_model_was_replaced_is_refused(two_champions):
    store, registry = two_champions
    job_id = Catalog(registry).version("m", V1).job_id
    store.put(artifact_key("m", V1, "model.onnx"), store.get(artifact_key("m", V2, "model.onnx")))

    with pytest.raises(RollbackRefused, match=f"model.onnx differs from what job {job_id}"):
        rollback("m", store, registry)
    assert Catalog(registry).champion("m").version == V2


def test_rollback_to_a_version_no_job_published_is_refused(two_champions):
    store, registry = two_champions
    publish(store, None, "m", V3, value=0.99, seed=2)  # a folder written by hand
    assert promote("m", V3, store, registry).decision == "rejected"

    with pytest.raises(RollbackRefused, match="never matched to the job that published them"):
        rollback("m", store, registry, to_version=V3)
    assert Catalog(registry).champion("m").version == V2


def test_rollback_without_an_earlier_version_is_refused(store, registry):
    publish(store, registry, "m", V1)
    promote("m", V1, store, registry)

    with pytest.raises(RollbackRefused, match="no approved version older"):
        rollback("m", store, registry)


def test_list_versions_shows_decisions_and_the_champion(two_champions):
    store, registry = two_champions
    publish(store, registry, "m", V3, value=0.1, seed=2)
    promote("m", V3, store, registry)

    rows = list_versions("m", registry)

    assert [(r["version"], r["decision"], r["champion"]) for r in rows] == [
        (V1, "approved", False),
        (V2, "approved", True),
        (V3, "rejected", False),
    ]
    assert "worse than the champion" in rows[2]["reason"]


def test_show_version_gives_card_record_and_history(two_champions):
    store, registry = two_champions

    shown = show_version("m", store, registry)
    older = show_version("m", store, registry, V1)

    assert (shown["version"], shown["champion"]) == (V2, True)
    assert shown["card"]["metrics"]["holdout"]["accuracy"] == 0.95
    assert older["record"]["decision"] == "approved" and older["champion"] is False
    with pytest.raises(NotFoundError, match="unknown model"):
        list_versions("nope", registry)
